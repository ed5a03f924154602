{{/* Chart name, overridable with nameOverride. */}}
{{- define "metamapper-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: fullnameOverride, or <release>-<name> (the release name
alone when it already contains the name). */}}
{{- define "metamapper-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "metamapper-operator.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the operator pods; never change them after a first install. */}}
{{- define "metamapper-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "metamapper-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The standard labels of every object. */}}
{{- define "metamapper-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "metamapper-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: metamapper-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "metamapper-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "metamapper-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The subject every binding grants the rules to: the operator's ServiceAccount. */}}
{{- define "metamapper-operator.subjects" -}}
- kind: ServiceAccount
  name: {{ include "metamapper-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* "true" when several operator pods run: one leads, the others stand by. */}}
{{- define "metamapper-operator.ha" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{/* The metrics Service's name: a DNS label (at most 63 characters, letters, digits and
dashes, starting with a letter), so the prefix is cut to leave room for "-metrics". */}}
{{- define "metamapper-operator.metricsServiceName" -}}
{{- $prefix := include "metamapper-operator.fullname" . | replace "." "-" | trunc 55 | trimSuffix "-" }}
{{- if not (regexMatch "^[a-z]" $prefix) }}
{{- fail (printf "the metrics Service name would start with %q, and a Service name must start with a letter: set fullnameOverride, or metrics.service.enabled=false" (substr 0 1 $prefix)) }}
{{- end }}
{{- printf "%s-metrics" $prefix }}
{{- end }}

{{/* The annotation on the operator Deployment that says which namespaces it serves ("*":
all of them); other releases read it (lookup) to refuse an overlap. */}}
{{- define "metamapper-operator.servesAnnotation" -}}
metamapper.io/watch-namespaces
{{- end }}

{{- define "metamapper-operator.serves" -}}
{{- if .Values.watchNamespaces }}{{ join "," .Values.watchNamespaces }}{{ else }}*{{ end }}
{{- end }}

{{/*
Values the schema cannot check (it cannot compare two fields, nor see other releases).
Each Lease belongs to one release, so two releases whose namespaces overlap would each
elect a leader and both act on the same objects: installing or upgrading a release whose
namespaces overlap another release's is refused. The other releases are found with lookup,
which sees the cluster on install and upgrade (not in `helm template` or a client-side
dry run).
*/}}
{{- define "metamapper-operator.validate" -}}
{{- if eq (int .Values.liveness.port) (int .Values.metrics.port) }}
{{- fail (printf "liveness.port and metrics.port must differ (both %d): the operator serves /healthz and /metrics on two ports" (int .Values.metrics.port)) }}
{{- end }}
{{- $key := include "metamapper-operator.servesAnnotation" . }}
{{- $mine := .Values.watchNamespaces }}
{{- range $other := (lookup "apps/v1" "Deployment" "" "").items | default list }}
{{- $annotations := $other.metadata.annotations | default dict }}
{{- $labels := $other.metadata.labels | default dict }}
{{- $self := and (eq $other.metadata.namespace $.Release.Namespace) (eq (get $labels "app.kubernetes.io/instance") $.Release.Name) }}
{{- if and (hasKey $annotations $key) (not $self) }}
{{- $theirs := splitList "," (get $annotations $key) }}
{{- $overlap := or (not $mine) (has "*" $theirs) }}
{{- range $mine }}{{ if has . $theirs }}{{ $overlap = true }}{{ end }}{{ end }}
{{- if $overlap }}
{{- fail (printf "metamapper-operator release %s/%s already serves %s; this release would serve %s. Two releases whose namespaces overlap would both act on the same Metamappers (each elects a leader on a Lease of its own): give each release namespaces of its own (watchNamespaces), or change that release instead" $other.metadata.namespace (get $labels "app.kubernetes.io/instance") (ternary "every namespace" (join ", " $theirs) (has "*" $theirs)) (ternary (join ", " $mine) "every namespace" (not (empty $mine)))) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The coordination.k8s.io Lease (in the release namespace) the operator pods elect a
leader on. */}}
{{- define "metamapper-operator.leaseName" -}}
{{- default (include "metamapper-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The operator's API access, one rule per resource: exactly the verbs it uses.
Rendered into the ClusterRole (cluster-wide) or into each namespace's Role (watchNamespaces).
The leader-election Lease has a Role of its own in the release namespace (rbac.yaml).
*/}}
{{- define "metamapper-operator.rules" -}}
# Metamapper objects: watched and indexed by kopf, which keeps its last-handled
# configuration in an annotation (patch); read (get) before creating children, so none
# are created for an object deleted while the watch was down. Status is written with
# merge patches.
- apiGroups: [metamapper.io]
  resources: [metamappers]
  verbs: [get, list, watch, patch]
- apiGroups: [metamapper.io]
  resources: [metamappers/status]
  verbs: [patch]
# One Deployment per pool and one for the scheduler, applied server-side (a new object
# needs create too); sizes change through the scale subresource.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
# The rendered Celery settings (owned by the Metamapper: garbage-collected with it).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch, create, patch]
# Broker and management-API credentials, read by the queue-depth probes: get by name
# only, never list or watch. Without watchNamespaces this reaches every namespace: RBAC
# narrows by namespace or by object name, and the names are the tenants' own
# (spec.broker.urlSecretRef ...). watchNamespaces narrows it to the listed namespaces.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# A PodDisruptionBudget per pool and the fleet's optional NetworkPolicy, applied
# server-side; deleted when their pool leaves the spec or they are turned off.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch, delete]
# Worker pods: the drain mark, the pod-deletion-cost that makes drained workers go first,
# and not-safe-to-evict marks on the pods running a task.
# Standalone scheduler pods: watched, and their scheduling gate lifted (patch) once no
# other scheduler pod of the fleet exists. The operator patches only pods with its own
# labels, but RBAC cannot narrow by label and the pods' names are made by ReplicaSets:
# without watchNamespaces, patch reaches the pods of every namespace.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch]
# Flower's Service (spec.flower), deleted when Flower is turned off.
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch, delete]
# Events on the Metamapper objects; a repeat raises the count of the Event already
# posted (patch) instead of creating another.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end }}
