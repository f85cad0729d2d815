{{/* Chart name, truncated to 63 characters (DNS label). */}}
{{- define "calgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "calgate.fullname" -}}
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

{{- define "calgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "calgate.labels" -}}
helm.sh/chart: {{ include "calgate.chart" . }}
{{ include "calgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "calgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "calgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "calgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "calgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding calgate's secrets. */}}
{{- define "calgate.secretName" -}}
{{- default (include "calgate.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Environment variable (and Secret key) of a tenant's client secret. */}}
{{- define "calgate.tenantSecretKey" -}}
{{- printf "CALGATE_TENANT_%s_SECRET" (. | upper | replace "-" "_") }}
{{- end }}

{{/* Refuse combinations that cannot work. */}}
{{- define "calgate.validate" -}}
{{- $sqlite := eq .Values.calgate.store.type "sqlite" }}
{{- if and $sqlite (gt (int .Values.replicaCount) 1) }}
{{- fail "calgate.store.type=sqlite supports exactly one replica: set replicaCount=1 or use calgate.store.type=postgres" }}
{{- end }}
{{- if and $sqlite .Values.autoscaling.enabled }}
{{- fail "autoscaling needs calgate.store.type=postgres: SQLite serves one replica" }}
{{- end }}
{{- if and $sqlite .Values.podDisruptionBudget.enabled }}
{{- fail "podDisruptionBudget needs calgate.store.type=postgres: one SQLite replica cannot stay available during a drain" }}
{{- end }}
{{- if and .Values.callbacks.enabled (not .Values.callbacks.publicUrl) }}
{{- fail "callbacks.publicUrl is required with callbacks.enabled: it is how Cronofy reaches calgate" }}
{{- end }}
{{- if and (not $sqlite) (not .Values.calgate.store.postgres.url) }}
{{- fail "calgate.store.postgres.url is required with calgate.store.type=postgres" }}
{{- end }}
{{- end }}
