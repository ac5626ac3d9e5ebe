{{/* The chart name. */}}
{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource-name prefix: RELEASE-tessera unless overridden. */}}
{{- define "tessera.fullname" -}}
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

{{/* Labels on every resource. */}}
{{- define "tessera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tessera
{{- end }}

{{/* Selector labels; callers add app.kubernetes.io/component. */}}
{{- define "tessera.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* An image reference: registry/repository:tag. Args: (dict "ctx" $ "image" .Values.image.coordinator "suffix" "") */}}
{{- define "tessera.image" -}}
{{- $registry := .ctx.Values.image.registry }}
{{- $tag := printf "%s%s" (default .ctx.Chart.AppVersion .image.tag) (default "" .suffix) }}
{{- if $registry }}
{{- printf "%s/%s:%s" $registry .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* The Secret holding the cluster secret. */}}
{{- define "tessera.clusterSecretName" -}}
{{- default (printf "%s-cluster" (include "tessera.fullname" .)) .Values.clusterSecret.existingSecret }}
{{- end }}

{{/* The Secret holding S3 credentials, or "" when there is none. */}}
{{- define "tessera.s3SecretName" -}}
{{- if .Values.results.s3.existingSecret }}
{{- .Values.results.s3.existingSecret }}
{{- else if .Values.results.s3.accessKeyId }}
{{- printf "%s-s3" (include "tessera.fullname" .) }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "tessera.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tessera.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The coordinator's cluster address as workers dial it: its pod's stable DNS name
     through the headless service. */}}
{{- define "tessera.coordinatorAddress" -}}
{{- printf "%s-coordinator-0.%s-coordinator-headless.%s.svc:%v" (include "tessera.fullname" .) (include "tessera.fullname" .) .Release.Namespace .Values.coordinator.port }}
{{- end }}

{{/* Where the cluster secret is mounted, and the file tessera reads it from. */}}
{{- define "tessera.secretDir" -}}/var/run/tessera/cluster{{- end }}
