// Validate prometheus-operator, cert-manager and KEDA objects (a JSON array on stdin) against the CRD schemas, as
// compiled by @kubernetes-models/prometheus-operator and /cert-manager (installed by `make setup` into .tools/node).
// Exit 1 with one line per error. Type-level: the published schemas do not forbid unknown fields.
import { ServiceMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { Certificate, Issuer } from "@kubernetes-models/cert-manager/cert-manager.io/v1";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1";

const kinds = { ServiceMonitor, PrometheusRule, Certificate, Issuer, ScaledObject };
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failures = 0;
for (const obj of JSON.parse(input)) {
  const Model = kinds[obj.kind];
  if (!Model) { console.log(`unknown kind ${obj.kind}`); failures++; continue; }
  try { new Model(obj).validate(); }
  catch (e) { console.log(`${obj.kind}/${obj.metadata?.name}: ${e.message}`); failures++; }
}
process.exit(failures ? 1 : 0);
