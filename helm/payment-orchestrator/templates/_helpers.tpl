{{- define "po.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "po.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "po.labels" -}}
app.kubernetes.io/name: {{ include "po.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "po.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The sandbox partner's image: the Dockerfile's sandbox-partner stage. */}}
{{- define "po.sandboxPartnerImage" -}}
{{- with .Values.sandboxPartner.image -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag | default $.Chart.AppVersion }}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "po.selector" -}}
app.kubernetes.io/name: {{ include "po.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "po.secretName" -}}
{{- default (include "po.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "po.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "po.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The partners: as configured, or the two sandbox partners served by the
     deployed sandbox partner server. */}}
{{- define "po.partners" -}}
{{- if .Values.config.partners -}}
{{ .Values.config.partners }}
{{- else if .Values.sandboxPartner.enabled -}}
{{- $url := printf "http://%s-sandbox-partner:7000" (include "po.fullname" .) -}}
ingenico=creditcard@{{ $url }},illicado=giftcard@{{ $url }}
{{- else -}}
{{- fail "config.partners is empty and sandboxPartner.enabled is false: name the partners" -}}
{{- end -}}
{{- end -}}

{{/* The port the probes ask: the plaintext health port under TLS. */}}
{{- define "po.probePort" -}}
{{- if .Values.tls.existingSecret -}}
{{ .Values.tls.healthPort }}
{{- else -}}
50051
{{- end -}}
{{- end -}}
