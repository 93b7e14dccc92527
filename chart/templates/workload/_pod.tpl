{{/*
The vLLM pod template (metadata + spec), shared by the Deployment (role "single") and the
LeaderWorkerSet (roles "leader" and "worker"). Called with (dict "root" $ "role" ROLE).
- single: `vllm serve MODEL` with the flags as args;
- leader: starts the Ray head, waits for the group's workers, then `exec vllm serve MODEL "$@"`:
  the args (and the recipe flags the webhook appends) reach vLLM through "$@";
- worker: joins the leader's Ray cluster; serves nothing itself (no port, no probes, no flags).
In manual mode each pod of a group holds gpu_count / group_size GPUs.
*/}}
{{- define "aim-engine.vllmPod" -}}
{{- $root := .root -}}
{{- $role := .role -}}
{{- $ae := $root.Values.aim_engine -}}
{{- $managed := include "aim-engine.managed" $root -}}
{{- $group := ternary 1 (int $root.Values.workload.leader_worker.group_size) (eq $role "single") -}}
{{- $gpus := include "aim-engine.gpuCount" $root -}}
{{- $perPod := "" -}}
{{- if $gpus }}{{ $perPod = div (int $gpus) $group | toString }}{{ end -}}
metadata:
  labels:
    {{- include "aim-engine.selectorLabels" (dict "root" $root "component" "inference") | nindent 4 }}
    {{- if $managed }}
    aim-engine.io/recipe-id: {{ include "aim-engine.recipeLabel" $root | quote }}
    {{- end }}
    {{- if $ae.performance_tuning }}
    aim-engine.io/performance-tuning: "true"
    {{- end }}
    {{- if ne $role "single" }}
    aim-engine.io/role: {{ $role }}
    {{- end }}
    {{- with $root.Values.workload.pod_labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- with $root.Values.workload.pod_annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- if $managed }}
    # The release's selection: the admission webhook injects this recipe into each Pod.
    aim-engine.io/recipe-config: {{ include "aim-engine.recipeConfig" $root }}
    {{- end }}
    {{- with $ae.slo }}
    # Service-level targets: the webhook holds the pods' recipe to them (the selector's own check).
    {{- if not (kindIs "invalid" .ttft_p95_ms) }}
    aim-engine.io/slo-ttft-p95-ms: {{ .ttft_p95_ms | toString | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" .itl_p95_ms) }}
    aim-engine.io/slo-max-latency-ms: {{ .itl_p95_ms | toString | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" .min_output_tokens_per_second) }}
    aim-engine.io/slo-min-tokens-per-second: {{ .min_output_tokens_per_second | toString | quote }}
    {{- end }}
    {{- end }}
    # Pods roll when what the selection depends on changes (model, overrides, pins).
    checksum/selection-inputs: {{ list $ae.model_id $ae.gpu_count $ae.precision $ae.backend $ae.overrides $ae.custom_recipe $ae.recipe_id $ae.pinned_recipe $ae.hardware.gpu_type $ae.performance $ae.slo | toJson | sha256sum | trunc 16 }}
    checksum/serving: {{ list (include "aim-engine.vllmArgs" $root) (include "aim-engine.env" $root) | toJson | sha256sum | trunc 16 }}
spec:
  serviceAccountName: {{ include "aim-engine.serviceAccountName" (dict "root" $root "sa" "engine") }}
  automountServiceAccountToken: false
  {{- with $root.Values.workload.drain }}
  terminationGracePeriodSeconds: {{ add .pre_stop_seconds .shutdown_timeout_seconds 10 }}
  {{- end }}
  {{- with $root.Values.workload.priority_class_name }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $root.Values.image_pull_secrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.workload.security_context }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.workload.node_selector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- /* Manual mode: tolerate the GPU taint of the vendor whose GPUs the pod requests (the GPU
  operators taint GPU nodes with the resource name as key, as Kubernetes' ExtendedResourceToleration
  expects); the selector hook has checked that the cluster places it on the product meant. With a
  recipe the webhook adds the recipe's toleration. */}}
  {{- $tolerations := $root.Values.workload.tolerations | default list }}
  {{- $manualGpu := include "aim-engine.manualGpuResource" $root }}
  {{- if and (not $managed) $gpus $manualGpu }}
  {{- /* the operators' taint is the vendor's resource, also for a partition (nvidia.com/mig-3g.40gb) */}}
  {{- $tolerations = append $tolerations (dict "key" (printf "%s.com/gpu" (include "aim-engine.manualVendor" $root)) "operator" "Exists") }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.workload.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $root.Values.model_cache.prewarm.enabled }}
  initContainers:
    # The model-prewarm Job fills the shared cache once; every replica waits for its marker.
    - name: wait-for-model-cache
      image: {{ include "aim-engine.vllmImage" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.vllm.pull_policy }}
      command:
        - sh
        - -c
        - until [ -f "$MARKER" ]; do echo "waiting for the model pre-warm Job (pods -l app.kubernetes.io/component=model-prewarm) to put {{ $ae.model_id }} in the model cache"; sleep 5; done
      env:
        - name: MARKER
          value: {{ include "aim-engine.prewarmMarker" $root | quote }}
      resources:
        requests: {cpu: 10m, memory: 16Mi}
        limits: {cpu: 100m, memory: 64Mi}
      volumeMounts:
        - name: model-cache
          mountPath: {{ $root.Values.model_cache.mount_path }}
  {{- end }}
  containers:
    - name: vllm
      image: {{ include "aim-engine.vllmImage" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.vllm.pull_policy }}
      {{- if eq $role "worker" }}
      # LWS_LEADER_ADDRESS is set on every pod of the group by the LeaderWorkerSet controller.
      command: ["sh", "-c", "exec ray start --address=$(LWS_LEADER_ADDRESS):6379 --block --disable-usage-stats"]
      {{- else }}
      {{- if eq $role "leader" }}
      command:
        - "sh"
        - "-c"
        - |
          set -e
          ray start --head --port=6379 --disable-usage-stats
          until [ "$(python3 -c 'import ray; ray.init(address="auto", logging_level="ERROR"); print(sum(n["Alive"] for n in ray.nodes()))')" -ge "${LWS_GROUP_SIZE:-1}" ]; do
            echo "waiting for the group's ${LWS_GROUP_SIZE} Ray nodes"; sleep 5
          done
          exec vllm serve {{ $ae.model_id | quote }} "$@"
        - "vllm"
      {{- else if eq $root.Values.workload.engine "simulator" }}
      # workload.engine=simulator: aim-engine-sim takes vLLM's command line (tests only).
      command: ["aim-engine-sim", "serve", {{ $ae.model_id | quote }}]
      {{- else }}
      command: ["vllm", "serve", {{ $ae.model_id | quote }}]
      {{- end }}
      args:
        - "--host"
        - "0.0.0.0"
        - "--port"
        - "8000"
        - "--shutdown-timeout"
        - {{ $root.Values.workload.drain.shutdown_timeout_seconds | toString | quote }}
        {{- if not $managed }}
        {{- if $gpus }}
        {{- if eq $role "leader" }}
        - "--tensor-parallel-size"
        - {{ $perPod | quote }}
        - "--pipeline-parallel-size"
        - {{ $group | toString | quote }}
        - "--distributed-executor-backend"
        - "ray"
        {{- else }}
        - "--tensor-parallel-size"
        - {{ $gpus | quote }}
        {{- end }}
        {{- end }}
        {{- with include "aim-engine.precision" $root }}
        {{- if eq . "fp8" }}
        - "--quantization"
        - "fp8"
        {{- else if eq . "bf16" }}
        - "--dtype"
        - "bfloat16"
        {{- else if eq . "fp16" }}
        - "--dtype"
        - "float16"
        {{- end }}
        {{- end }}
        {{- end }}
        {{- if $ae.debug }}
        - "--enable-log-requests"
        {{- end }}
        {{- include "aim-engine.vllmFlags" $root | nindent 8 }}
        {{- $named := false }}
        {{- range $root.Values.workload.extra_args }}{{ if hasPrefix "--served-model-name" (toString .) }}{{ $named = true }}{{ end }}{{ end }}
        {{- if not $named }}
        # Clients and every metric (label model_name) see the model's id, also offline, where vLLM
        # would otherwise name it by its snapshot path in the cache.
        - "--served-model-name"
        - {{ $ae.model_id | quote }}
        {{- end }}
        {{- range $root.Values.workload.extra_args }}
        - {{ . | quote }}
        {{- end }}
        {{- if and (eq $root.Values.workload.engine "simulator") (eq $role "single") }}
        {{- with $root.Values.workload.simulator }}
        - "--ttft-ms"
        - {{ .ttft_ms | toString | quote }}
        - "--itl-ms"
        - {{ .itl_ms | toString | quote }}
        - "--itl-per-seq-ms"
        - {{ .itl_per_seq_ms | toString | quote }}
        - "--max-waiting"
        - {{ .max_waiting | toString | quote }}
        {{- end }}
        {{- end }}
      {{- end }}
      env:
        - name: HF_HOME
          value: {{ $root.Values.model_cache.mount_path | quote }}
        - name: VLLM_LOGGING_LEVEL
          value: {{ ternary "DEBUG" ($ae.log_level | upper) $ae.debug | quote }}
        # Longer than the idle timeout of the clients in front (values workload.keep_alive_seconds).
        - name: VLLM_HTTP_TIMEOUT_KEEP_ALIVE
          value: {{ $root.Values.workload.keep_alive_seconds | toString | quote }}
        {{- include "aim-engine.env" $root | nindent 8 }}
        {{- with $root.Values.workload.extra_env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if ne $role "worker" }}
      {{- with $root.Values.workload.drain.pre_stop_seconds }}
      lifecycle:
        preStop:
          sleep: {seconds: {{ . }}}
      {{- end }}
      ports:
        - name: http
          containerPort: 8000
          protocol: TCP
      startupProbe:
        httpGet: {path: /health, port: http}
        periodSeconds: 10
        failureThreshold: {{ $root.Values.workload.startup_probe_failure_threshold }}
      readinessProbe:
        httpGet: {path: /health, port: http}
        periodSeconds: 10
      livenessProbe:
        httpGet: {path: /health, port: http}
        periodSeconds: 20
        failureThreshold: 6
      {{- end }}
      {{- if or $root.Values.workload.resources (and (not $managed) $gpus) }}
      resources:
        {{- $res := deepCopy ($root.Values.workload.resources | default dict) }}
        {{- if and (not $managed) $gpus }}
        {{- $gpuRes := include "aim-engine.manualGpuResource" $root }}
        {{- /* A CPU product (vLLM's CPU build) has no device resource: cpu_cores and workload.resources size it. */}}
        {{- $device := ternary (dict $gpuRes $perPod) dict (ne $gpuRes "") }}
        {{- $_ := set $res "limits" (merge (deepCopy $device) ($res.limits | default dict)) }}
        {{- $_ := set $res "requests" (merge (deepCopy $device) ($res.requests | default dict)) }}
        {{- if $ae.hardware.cpu_cores }}
        {{- $_ := set $res.requests "cpu" ($ae.hardware.cpu_cores | toString) }}
        {{- end }}
        {{- end }}
        {{- toYaml $res | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: model-cache
          mountPath: {{ $root.Values.model_cache.mount_path }}
        # vLLM needs more shared memory than the container runtime's 64 MiB, even for one device.
        - name: dshm
          mountPath: /dev/shm
  volumes:
    - name: model-cache
      {{- if $root.Values.model_cache.enabled }}
      persistentVolumeClaim:
        claimName: {{ $root.Values.model_cache.existing_claim | default (include "aim-engine.cache" $root) }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ include "aim-engine.shmSize" $root }}
{{- end -}}
