{{/* Names and labels, shared by every template. */}}

{{- define "pruneops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pruneops.fullname" -}}
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

{{- define "pruneops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; pass (dict "ctx" $ "component" "serving"). */}}
{{- define "pruneops.labels" -}}
helm.sh/chart: {{ include "pruneops.chart" .ctx }}
{{ include "pruneops.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: pruneops
{{- end }}

{{- define "pruneops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pruneops.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "pruneops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pruneops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The pruneops image; pass (dict "ctx" $ "gpu" true) for the CUDA variant. A digest
(image.digest, image.gpuDigest) pins the exact image and wins over the tag. */}}
{{- define "pruneops.image" -}}
{{- $digest := ternary .ctx.Values.image.gpuDigest .ctx.Values.image.digest (default false .gpu) }}
{{- if $digest }}
{{- printf "%s@%s" .ctx.Values.image.repository $digest }}
{{- else }}
{{- $tag := default .ctx.Chart.AppVersion .ctx.Values.image.tag }}
{{- printf "%s:%s%s" .ctx.Values.image.repository $tag (ternary "-gpu" "" (default false .gpu)) }}
{{- end }}
{{- end }}

{{/* Pod scheduling every pruneops pod shares: priority class, and topology spread whose
constraints select the component's own pods unless they name a labelSelector.
Pass (dict "ctx" $ "component" "serving"). */}}
{{- define "pruneops.podScheduling" -}}
{{- with .ctx.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if .ctx.Values.topologySpreadConstraints }}
{{- $selector := dict "matchLabels" (include "pruneops.selectorLabels" . | fromYaml) }}
topologySpreadConstraints:
{{- range .ctx.Values.topologySpreadConstraints }}
  - {{- merge (dict) . (dict "labelSelector" $selector) | toYaml | nindent 4 }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pruneops.trackingUri" -}}
{{- if .Values.mlflow.enabled }}
{{- printf "http://%s-mlflow:%d" (include "pruneops.fullname" .) (int .Values.mlflow.port) }}
{{- else }}
{{- required "set mlflow.trackingUri, or mlflow.enabled=true" .Values.mlflow.trackingUri }}
{{- end }}
{{- end }}

{{/* Pod and container security settings every pruneops container uses. */}}
{{- define "pruneops.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "pruneops.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Environment every pruneops container shares. */}}
{{- define "pruneops.commonEnv" -}}
- name: MLFLOW_TRACKING_URI
  value: {{ include "pruneops.trackingUri" . | quote }}
- name: PRUNEOPS_HOME
  value: /tmp/pruneops
- name: MLFLOW_DISABLE_TELEMETRY
  value: "true"
{{- with .Values.trustedModules }}
- name: PRUNEOPS_TRUSTED_MODULES
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
