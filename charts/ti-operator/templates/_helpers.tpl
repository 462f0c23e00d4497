{{/*
ti-operator.name is the chart name, or nameOverride.
*/}}
{{- define "ti-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
ti-operator.fullname is the prefix of every object's name: fullnameOverride, or "<release>-<name>"
(just the release name when it already contains the chart name). DNS labels allow 63 characters.
*/}}
{{- define "ti-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
ti-operator.chart is "<chart>-<version>", for the helm.sh/chart label.
*/}}
{{- define "ti-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
ti-operator.selectorLabels select the operator pod; they never change across upgrades.
*/}}
{{- define "ti-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ti-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ti-operator.labels go on every object of the release.
*/}}
{{- define "ti-operator.labels" -}}
helm.sh/chart: {{ include "ti-operator.chart" . }}
{{ include "ti-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: ti-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
ti-operator.serviceAccountName is the operator's ServiceAccount.
*/}}
{{- define "ti-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ti-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
ti-operator.image is the operator image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "ti-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
ti-operator.toolkitImage is the image of the fetch and upload steps: config.toolkitImage or the operator image.
*/}}
{{- define "ti-operator.toolkitImage" -}}
{{- default (include "ti-operator.image" .) .Values.config.toolkitImage }}
{{- end }}

{{/*
ti-operator.watchNamespaces is the JSON list of namespaces watched in namespaced mode (the release
namespace when watchNamespaces is empty). Cluster mode with a namespace list is refused: say which one
you mean.
*/}}
{{- define "ti-operator.watchNamespaces" -}}
{{- if eq .Values.rbac.scope "cluster" }}
{{- if .Values.watchNamespaces }}
{{- fail (printf "watchNamespaces (%s) is only used with rbac.scope=namespaced; with rbac.scope=cluster the operator watches every namespace: set rbac.scope=namespaced or remove watchNamespaces" (join ", " .Values.watchNamespaces)) }}
{{- end }}
{{- list | toJson }}
{{- else }}
{{- $namespaces := .Values.watchNamespaces | default (list .Release.Namespace) | uniq }}
{{- $namespaces | toJson }}
{{- end }}
{{- end }}

{{/*
ti-operator.catalog is catalog.yaml: instance types, framework images and the toolkit image, in the
shape of the operator's built-in catalog (src/ti/catalog/defaults.yaml), read through TI_CATALOG_FILE.
*/}}
{{- define "ti-operator.catalog" -}}
inheritDefaults: {{ .Values.config.inheritDefaults }}
toolkitImage: {{ include "ti-operator.toolkitImage" . | quote }}
instanceTypes:
{{- $types := dict }}
{{- range $name, $type := .Values.config.instanceTypes }}
{{- if $type }}{{ $_ := set $types $name $type }}{{ end }}
{{- end }}
{{- if $types }}
  {{- toYaml $types | nindent 2 }}
{{- else }} {}
{{- end }}
frameworks:
{{- $frameworks := dict }}
{{- range $version, $images := .Values.config.frameworks }}
{{- if $images }}{{ $_ := set $frameworks $version $images }}{{ end }}
{{- end }}
{{- if $frameworks }}
  {{- toYaml $frameworks | nindent 2 }}
{{- else }} {}
{{- end }}
{{- end }}

{{/*
ti-operator.jobRules are the rules the operator needs wherever it runs jobs (a ClusterRole in cluster
mode, a Role per watched namespace otherwise). Each rule says why it is there; tests/unit/test_rbac.py
derives them from the code's calls and fails on a rule not used or a call not granted.
*/}}
{{- define "ti-operator.jobRules" -}}
# kopf lists and watches jobs (the operator reconciles from what the watch delivers), and the operator
# deletes one when ttlSecondsAfterFinished expires. kopf patches nothing: it has event handlers only.
- apiGroups: ["training.ti.io"]
  resources: ["tftrainingjobs"]
  verbs: ["list", "watch", "delete"]
# Phase, conditions and instances, as one merge patch of the status subresource.
- apiGroups: ["training.ti.io"]
  resources: ["tftrainingjobs/status"]
  verbs: ["patch"]
# One pod per instance: the operator lists and watches the pods with its job label (a server-side
# selector), creates them, deletes them on retry, suspend, stop and cleanPodPolicy, and reads one
# fresh only where its cache cannot be trusted (a create that meets a pod it did not know of).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The headless Service that gives multi-instance jobs their DNS names for TF_CONFIG, watched by the same
# label; the garbage collector deletes it with its job.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create"]
# Kubernetes Events on the job for `kubectl describe` (created, failed, restarting, completed).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Kueue: a job labelled kueue.x-k8s.io/queue-name gets a Workload the operator creates and watches
# (by its job label) and deactivates while the job is suspended; it marks it Finished when the job
# ends and clears an evicted admission.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads/status"]
  verbs: ["patch"]
{{- end }}

{{/*
ti-operator.queueRules: Kueue's cluster-wide objects a queued job needs read, and only read: the
ResourceFlavors its admission names (their node labels and tolerations go on its pods; listing them
also tells whether Kueue is installed) and the WorkloadPriorityClass its label names.
*/}}
{{- define "ti-operator.queueRules" -}}
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["resourceflavors"]
  verbs: ["list"]
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloadpriorityclasses"]
  verbs: ["get"]
{{- end }}

{{/*
ti-operator.crdRules: kopf lists and watches CustomResourceDefinitions to notice its resource
appearing, changing or going (it finds resources through API discovery, which needs no rule).
*/}}
{{- define "ti-operator.crdRules" -}}
# kopf notices the TFTrainingJob CRD being installed, upgraded or removed (read-only).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
