{{/*
Names. Resource names follow the release name, as seed 004's commands expect for a release named
aim-engine: deployment/aim-engine, job/aim-engine-recipe-selector, configmap/aim-engine-recipe-config,
deployment/aim-engine-recipe-validator, service/aim-engine-service. The release part is truncated so
that release + the longest suffix ("-recipe-validator-certs", 23 characters) fits in 63.
*/}}
{{- define "aim-engine.fullname" -}}
{{- .Values.fullname_override | default .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "aim-engine.name" -}}
{{- .Values.name_override | default "aim-engine" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aim-engine.component" -}}
{{- printf "%s-%s" (include "aim-engine.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aim-engine.recipeConfig" -}}{{ include "aim-engine.component" (dict "root" . "name" "recipe-config") }}{{- end -}}
{{- define "aim-engine.selector" -}}{{ include "aim-engine.component" (dict "root" . "name" "recipe-selector") }}{{- end -}}
{{- define "aim-engine.validator" -}}{{ include "aim-engine.component" (dict "root" . "name" "recipe-validator") }}{{- end -}}
{{- define "aim-engine.service" -}}{{ include "aim-engine.component" (dict "root" . "name" "service") }}{{- end -}}
{{- define "aim-engine.tlsSecret" -}}{{ include "aim-engine.component" (dict "root" . "name" "recipe-validator-tls") }}{{- end -}}
{{- define "aim-engine.reconcileJob" -}}{{ include "aim-engine.component" (dict "root" . "name" "recipe-validator-reconcile") }}{{- end -}}
{{- define "aim-engine.certsJob" -}}{{ include "aim-engine.component" (dict "root" . "name" "recipe-validator-certs") }}{{- end -}}
{{/* The model-prewarm Job's marker in the model cache: the model is there (aim-engine.prewarmMarker). */}}
{{- define "aim-engine.prewarmMarker" -}}
{{- printf "%s/aim-engine-prewarm/%s.done" .Values.model_cache.mount_path (.Values.aim_engine.model_id | replace "/" "--") -}}
{{- end -}}

{{/* The model-prewarm Job, (dict "root" $ "template" ITS-POD-TEMPLATE): named after the model and
its pod template (a new model or template, a new Job: a Job's pod template cannot change). */}}
{{- define "aim-engine.prewarmJob" -}}
{{- printf "%s-prewarm-%s" (include "aim-engine.fullname" .root | trunc 40 | trimSuffix "-") (list .root.Values.aim_engine.model_id .template | toJson | sha256sum | trunc 10) -}}
{{- end -}}

{{- define "aim-engine.cache" -}}{{ include "aim-engine.component" (dict "root" . "name" "model-cache") }}{{- end -}}

{{- define "aim-engine.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aim-engine.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aim-engine.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aim-engine.labels" -}}
{{ include "aim-engine.selectorLabels" . }}
app.kubernetes.io/part-of: aim-engine
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ include "aim-engine.chart" .root }}
{{- range $k, $v := .root.Values.common_labels }}
{{- if or (hasPrefix "app.kubernetes.io/" $k) (hasPrefix "aim-engine.io/" $k) (eq $k "helm.sh/chart") }}
{{- fail (printf "common_labels: %q is a label the chart sets itself (app.kubernetes.io/*, aim-engine.io/*, helm.sh/chart): choose another key" $k) }}
{{- end }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/* An image reference, (dict "root" $ "image" IMAGE): a digest wins over the tag; with a mirror
(global.imageRegistry) the registry part of the repository is the mirror (a repository whose
first part is no host, Docker Hub's, keeps its whole path: library/ for a one-part name). */}}
{{- define "aim-engine.image" -}}
{{- $repo := .image.repository -}}
{{- with include "aim-engine.imageRegistry" .root -}}
{{- $parts := splitList "/" $repo -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $repo = rest $parts | join "/" -}}
{{- else if eq (len $parts) 1 -}}
{{- $repo = printf "library/%s" $repo -}}
{{- end -}}
{{- $repo = printf "%s/%s" . $repo -}}
{{- end -}}
{{- if .image.digest -}}{{ printf "%s@%s" $repo .image.digest }}{{- else -}}{{ printf "%s:%s" $repo .image.tag }}{{- end -}}
{{- end -}}

{{/* The explicit GPU count: aim_engine.overrides.gpu_count wins over aim_engine.gpu_count. */}}
{{- define "aim-engine.gpuCount" -}}
{{- $ae := .Values.aim_engine -}}
{{- with coalesce $ae.overrides.gpu_count $ae.gpu_count -}}{{ . }}{{- end -}}
{{- end -}}
{{- define "aim-engine.precision" -}}
{{- $ae := .Values.aim_engine -}}
{{- with coalesce $ae.overrides.precision $ae.precision -}}{{ . }}{{- end -}}
{{- end -}}
{{- define "aim-engine.backend" -}}
{{- $ae := .Values.aim_engine -}}
{{- with coalesce $ae.overrides.backend $ae.backend -}}{{ . }}{{- end -}}
{{- end -}}

{{/* Context the workload must serve: max_input_length + max_output_length, when both are set. */}}
{{- define "aim-engine.minContext" -}}
{{- $p := .Values.aim_engine.performance -}}
{{- if and $p.max_input_length $p.max_output_length -}}{{ add $p.max_input_length $p.max_output_length }}{{- end -}}
{{- end -}}

{{/*
vLLM arguments from values, as EngineArgs names: vllm_args, then overrides.vllm_args, then the seed
keys vLLM has no flag for (performance.max_batch_size -> max_num_seqs; vllm_args.max_batch_size ->
max_num_seqs), hardware.memory_utilization -> gpu_memory_utilization, performance_tuning extras.
*/}}
{{- define "aim-engine.vllmArgs" -}}
{{- $ae := .Values.aim_engine -}}
{{- $args := dict -}}
{{- range $k, $v := $ae.vllm_args }}{{ $_ := set $args $k $v }}{{ end -}}
{{- range $k, $v := $ae.overrides.vllm_args }}{{ $_ := set $args $k $v }}{{ end -}}
{{- if hasKey $args "max_batch_size" -}}
{{- $_ := set $args "max_num_seqs" (get $args "max_batch_size") -}}
{{- $_ := unset $args "max_batch_size" -}}
{{- end -}}
{{- if $ae.performance.max_batch_size }}{{ $_ := set $args "max_num_seqs" $ae.performance.max_batch_size }}{{ end -}}
{{- if and $ae.hardware.memory_utilization (not (hasKey $args "gpu_memory_utilization")) }}{{ $_ := set $args "gpu_memory_utilization" $ae.hardware.memory_utilization }}{{ end -}}
{{- $ctx := include "aim-engine.minContext" . -}}
{{- if and $ctx (not (hasKey $args "max_model_len")) }}{{ $_ := set $args "max_model_len" (int $ctx) }}{{ end -}}
{{- if $ae.performance_tuning -}}
{{- if not (hasKey $args "enable_prefix_caching") }}{{ $_ := set $args "enable_prefix_caching" true }}{{ end -}}
{{- if not (hasKey $args "enable_chunked_prefill") }}{{ $_ := set $args "enable_chunked_prefill" true }}{{ end -}}
{{- if not (hasKey $args "async_scheduling") }}{{ $_ := set $args "async_scheduling" true }}{{ end -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}

{{/* vLLM command-line flags from the args mapping (true -> --flag, false -> --no-flag). */}}
{{- define "aim-engine.vllmFlags" -}}
{{- $args := include "aim-engine.vllmArgs" . | fromJson -}}
{{- range $k := keys $args | sortAlpha }}
{{- $v := get $args $k }}
{{- $flag := printf "--%s" ($k | replace "_" "-") }}
{{- if kindIs "bool" $v }}
{{- if $v }}
- {{ $flag | quote }}
{{- else }}
- {{ printf "--no-%s" ($k | replace "_" "-") | quote }}
{{- end }}
{{- else if or (kindIs "map" $v) (kindIs "slice" $v) }}
- {{ $flag | quote }}
- {{ toJson $v | quote }}
{{- else }}
- {{ $flag | quote }}
- {{ $v | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Environment of the vLLM container: env_vars, then overrides.env_vars. */}}
{{- define "aim-engine.env" -}}
{{- $ae := .Values.aim_engine -}}
{{- $env := dict -}}
{{- range $k, $v := $ae.env_vars }}{{ $_ := set $env $k $v }}{{ end -}}
{{- range $k, $v := $ae.overrides.env_vars }}{{ $_ := set $env $k $v }}{{ end -}}
{{- range $k := keys $env | sortAlpha }}
- name: {{ $k }}
  value: {{ get $env $k | toString | quote }}
{{- end }}
{{- end -}}

{{/* The recipe id on the serving pods: the pinned one, or "selected" (resolved from the ConfigMap). */}}
{{- define "aim-engine.recipeLabel" -}}
{{- $ae := .Values.aim_engine -}}
{{- if $ae.pinned_recipe -}}{{ $ae.pinned_recipe.recipe_id }}{{- else if $ae.recipe_id -}}{{ $ae.recipe_id }}{{- else -}}selected{{- end -}}
{{- end -}}

{{/* Restricted pod/container security for the aim-engine components. */}}
{{- define "aim-engine.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- define "aim-engine.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
Manual mode's GPU vendor: the vendor of aim_engine.hardware.gpu_type in the hardware table
(recipes/hardware/gpus.yaml, generated into _hardware.tpl), AMD when it is not set.
*/}}
{{- define "aim-engine.manualVendor" -}}
{{- $vendors := include "aim-engine.gpuVendors" . | fromJson -}}
{{- get $vendors (.Values.aim_engine.hardware.gpu_type | default "") | default "amd" -}}
{{- end -}}

{{/*
The GPU vendor the vLLM pods serve on, as far as it is known when the chart renders: the hardware
of a pinned recipe (pinned_recipe, or recipe_id in the catalog), else aim_engine.hardware.gpu_type,
else AMD (manual mode's default). A recipe the selector picks at install is not known yet: set
hardware.gpu_type or image.vllm.repository when it will not be an AMD one.
*/}}
{{- define "aim-engine.servingVendor" -}}
{{- $ae := .Values.aim_engine -}}
{{- $vendors := include "aim-engine.gpuVendors" . | fromJson -}}
{{- $hardware := "" -}}
{{- if $ae.pinned_recipe -}}
{{- $hardware = $ae.pinned_recipe.hardware | default "" | toString -}}
{{- else if $ae.recipe_id -}}
{{- $hardware = get (include "aim-engine.recipeHardware" . | fromJson) $ae.recipe_id | default "" -}}
{{- end -}}
{{- if not (hasKey $vendors $hardware) -}}{{- $hardware = $ae.hardware.gpu_type | default "" -}}{{- end -}}
{{- get $vendors $hardware | default "amd" -}}
{{- end -}}

{{/* The vLLM image: image.vllm.repository for every vendor, else the serving vendor's pinned image. */}}
{{- define "aim-engine.vllmImage" -}}
{{- $v := .Values.image.vllm -}}
{{- if $v.repository -}}
{{- if not (or $v.tag $v.digest) -}}
{{- fail "image.vllm.repository needs image.vllm.tag or image.vllm.digest (or unset it: image.vllm.vendor_images pins one image per GPU vendor)" -}}
{{- end -}}
{{- include "aim-engine.image" (dict "root" . "image" (dict "repository" $v.repository "tag" $v.tag "digest" $v.digest)) -}}
{{- else -}}
{{- $vendor := include "aim-engine.servingVendor" . -}}
{{- $image := get $v.vendor_images $vendor -}}
{{- if not $image -}}
{{- fail (printf "image.vllm.vendor_images.%s is not set: the vLLM image for %s GPUs (or set image.vllm.repository)" $vendor $vendor) -}}
{{- end -}}
{{- include "aim-engine.image" (dict "root" . "image" $image) -}}
{{- end -}}
{{- end -}}

{{/*
Size limit of the vLLM pods' /dev/shm: workload.shm_size for more than one GPU, and when the GPU
count is not known when the chart renders (a recipe the selector picks); shm_size_single_device for
one. The webhook adds no /dev/shm of its own to a pod that has one.
*/}}
{{- define "aim-engine.shmSize" -}}
{{- $ae := .Values.aim_engine -}}
{{- $gpus := include "aim-engine.gpuCount" . -}}
{{- if and (not $gpus) $ae.pinned_recipe -}}{{- $gpus = $ae.pinned_recipe.gpu_count | default "" | toString -}}{{- end -}}
{{- if and $gpus (le (int $gpus) 1) -}}
{{- .Values.workload.shm_size_single_device -}}
{{- else -}}
{{- .Values.workload.shm_size -}}
{{- end -}}
{{- end -}}

{{/*
Priority class of the webhook's pods: admission_controller.priority_class_name, or the one the
chart creates (priority_class.create; cluster-scoped, so its name carries the namespace).
*/}}
{{- define "aim-engine.webhookPriorityClass" -}}
{{- $ac := .Values.admission_controller -}}
{{- if $ac.priority_class_name -}}
{{- $ac.priority_class_name -}}
{{- else if $ac.priority_class.create -}}
{{- include "aim-engine.webhookConfig" . -}}
{{- end -}}
{{- end -}}
{{/* Manual mode's device resource: gpu_type's in the hardware table (a partition's own, such as
nvidia.com/mig-3g.40gb), else the vendor's. */}}
{{- define "aim-engine.manualGpuResource" -}}
{{- $vendor := include "aim-engine.manualVendor" . -}}
{{- $resources := include "aim-engine.gpuResources" . | fromJson -}}
{{- if ne $vendor "cpu" -}}{{- get $resources (.Values.aim_engine.hardware.gpu_type | default "") | default (printf "%s.com/gpu" $vendor) -}}{{- end -}}
{{- end -}}

{{/* Recipe-managed: the selector runs and the webhook injects (auto_select, or a pinned recipe). */}}
{{/* The selector hook sets the engine Deployment's strategy from the free devices (workload.strategy=auto
with a selected or pinned recipe); the chart then renders none, so Helm never reverts it. */}}
{{- define "aim-engine.upgradeDecided" -}}
{{- if and (eq .Values.workload.strategy "auto") (eq .Values.workload.kind "Deployment") (include "aim-engine.managed" .) -}}true{{- end -}}
{{- end -}}

{{- define "aim-engine.managed" -}}
{{- $ae := .Values.aim_engine -}}
{{- if or $ae.auto_select $ae.custom_recipe $ae.recipe_id $ae.pinned_recipe -}}true{{- end -}}
{{- end -}}

{{/* Cluster-scoped names carry the namespace too: one release name in two namespaces must not collide. */}}
{{- define "aim-engine.webhookConfig" -}}
{{- printf "%s-recipe-validator-%s" (include "aim-engine.fullname" .) .Release.Namespace | trunc 58 | trimSuffix "-" -}}
{{- end -}}

{{/* Scope of every aim-engine webhook. */}}
{{- define "aim-engine.webhookScope" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: [kube-system]
    {{- with .Values.admission_controller.webhook.namespaces }}
    - key: kubernetes.io/metadata.name
      operator: In
      values: {{ toJson . }}
    {{- end }}
objectSelector:
  matchExpressions:
    - key: aim-engine.io/recipe-id
      operator: Exists
sideEffects: None
admissionReviewVersions: [v1]
matchPolicy: Equivalent
{{- end -}}

{{/*
The taints the vLLM pods tolerate (workload.tolerations), for the selector hook: nodes tainted with
them count (`--tolerate-taint KEY`; `*` for a toleration of every taint), as the GPU operators'
taints do. By key: a toleration of a NoSchedule or NoExecute taint (or of any effect).
*/}}
{{- define "aim-engine.toleratedTaintArgs" -}}
{{- range .Values.workload.tolerations }}
{{- if or (not .effect) (eq .effect "NoSchedule") (eq .effect "NoExecute") }}
- "--tolerate-taint"
- {{ (and (not .key) (eq (.operator | default "Equal") "Exists")) | ternary "*" (.key | default "") | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* "true" when the router is on: router.enabled as set, else on for several replicas or autoscaling. */}}
{{- define "aim-engine.routerEnabled" -}}
{{- $r := .Values.router.enabled -}}
{{- if kindIs "bool" $r -}}{{ ternary "true" "" $r }}
{{- else if or (gt (int .Values.workload.replicas) 1) .Values.autoscaling.enabled -}}true
{{- end -}}
{{- end -}}
{{- define "aim-engine.router" -}}{{ include "aim-engine.component" (dict "root" . "name" "router") }}{{- end -}}
{{/* The Service in front of the engine pods: service/<release>-service, or <release>-engine when the router takes that name's traffic. */}}
{{- define "aim-engine.engineService" -}}
{{- if include "aim-engine.routerEnabled" . -}}{{ include "aim-engine.component" (dict "root" . "name" "engine") }}
{{- else -}}{{ include "aim-engine.service" . }}
{{- end -}}
{{- end -}}
{{/* The labels that select this release's serving engine pods (LeaderWorkerSet: the group leaders). */}}
{{- define "aim-engine.servingSelector" -}}
{{ include "aim-engine.selectorLabels" (dict "root" . "component" "inference") }}
{{- if eq .Values.workload.kind "LeaderWorkerSet" }}
aim-engine.io/role: leader
{{- end }}
{{- end -}}

{{/*
ServiceAccounts (service_account.*). Called with (dict "root" $ "sa" KEY), KEY one of webhook,
selector, certs, reconcile, router, benchmark, engine.
*/}}
{{- define "aim-engine.saDefault" -}}
{{- $r := .root -}}
{{- $names := dict
  "webhook" (include "aim-engine.validator" $r)
  "selector" (include "aim-engine.selector" $r)
  "certs" (include "aim-engine.certsJob" $r)
  "reconcile" (include "aim-engine.reconcileJob" $r)
  "router" (include "aim-engine.router" $r)
  "benchmark" (include "aim-engine.component" (dict "root" $r "name" "benchmark"))
  "engine" (include "aim-engine.component" (dict "root" $r "name" "engine")) -}}
{{- index $names .sa | required (printf "internal: no ServiceAccount component %q" .sa) -}}
{{- end -}}

{{- define "aim-engine.serviceAccountName" -}}
{{- $sa := .root.Values.service_account -}}
{{- $own := index ($sa.names | default dict) .sa | default "" -}}
{{- if $own -}}
{{- $own -}}
{{- else if $sa.create -}}
{{- if $sa.name -}}
{{- fail (printf "service_account.name (%q) names the one ServiceAccount every component runs as, with service_account.create: false; to name one the chart creates, set service_account.names.%s" $sa.name .sa) -}}
{{- end -}}
{{- include "aim-engine.saDefault" . -}}
{{- else if $sa.name -}}
{{- $sa.name -}}
{{- else -}}
{{- fail (printf "service_account.create is false: set service_account.name (every component) or service_account.names.%s to the ServiceAccount the %s runs as" .sa .sa) -}}
{{- end -}}
{{- end -}}

{{/* A component's ServiceAccount and the document separator after it, when the chart creates them.
(dict "root" $ "sa" KEY "component" LABEL "hook" ANNOTATIONS-or-nil) */}}
{{- define "aim-engine.serviceAccount" -}}
{{- if .root.Values.service_account.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "aim-engine.serviceAccountName" . }}
  labels:
    {{- include "aim-engine.labels" (dict "root" .root "component" .component) | nindent 4 }}
  {{- with merge (deepCopy (.hook | default dict)) (.root.Values.service_account.annotations | default dict) }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
---
{{- end }}
{{- end -}}

{{/* The registry mirror (global.imageRegistry), its trailing slash dropped; a scheme is refused. */}}
{{- define "aim-engine.imageRegistry" -}}
{{- $m := (.Values.global | default dict).imageRegistry | default "" | trimSuffix "/" -}}
{{- if contains "://" $m -}}
{{- fail (printf "global.imageRegistry %q: a registry host[:port][/path] without a scheme (e.g. %s)" $m (regexReplaceAll "^[a-z]+://" $m "")) -}}
{{- end -}}
{{- $m -}}
{{- end -}}
