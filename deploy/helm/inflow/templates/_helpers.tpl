{{/* Names and labels shared by every object of the chart. */}}
{{- define "inflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "inflow.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "inflow.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "inflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "inflow.secretName" -}}
{{- default (printf "%s-secrets" (include "inflow.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The port a component serves /health and /metrics on. */}}
{{- define "inflow.healthPort" -}}
{{- if eq .component "gateway" -}}{{ .values.port }}{{- else if eq .component "console" -}}{{ .values.port }}{{- else -}}{{ .values.metricsPort }}{{- end -}}
{{- end -}}

{{/* The path answering 200 when a component is healthy (the console's login page needs no token). */}}
{{- define "inflow.healthPath" -}}
{{- if eq .component "console" -}}/login{{- else -}}/health{{- end -}}
{{- end -}}

{{- define "inflow.volumeMounts" -}}
- name: config
  mountPath: /etc/inflow/config
  readOnly: true
- name: state
  mountPath: /var/lib/inflow
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.caSecret }}
- name: kafka-ca
  mountPath: /etc/inflow/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}
