{{/* Names, labels and the settings wiring shared by every template. */}}

{{- define "scr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "scr.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The three services: values key -> Kubernetes name, Python module, SCR_SERVICE_NAME and HTTP port. Ports and
modules are contracts (shared/DESIGN.md), not values.
*/}}
{{- define "scr.components" -}}
recordApi: {name: record-api, module: services.record_api, serviceName: record_api, port: 8001}
ingest: {name: ingest, module: services.ingest, serviceName: ingest, port: 8002}
consent: {name: consent, module: services.consent, serviceName: consent, port: 8003}
{{- end -}}

{{- define "scr.mllpPort" -}}2575{{- end -}}

{{- define "scr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scr.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "scr.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "scr.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: shared-care-record
{{- end -}}

{{- define "scr.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The database Secret reference for a service (its own, or the common one). */}}
{{- define "scr.databaseSecret" -}}
{{- $own := .own | default dict -}}
{{- if $own.name -}}
{{- dict "name" $own.name "key" ($own.key | default "url") | toJson -}}
{{- else -}}
{{- dict "name" (required "database.existingSecret.name is required: the Secret holding SCR_DATABASE_URL" .root.Values.database.existingSecret.name) "key" (.root.Values.database.existingSecret.key | default "url") | toJson -}}
{{- end -}}
{{- end -}}

{{/* Kafka SASL settings for a service: kafka.sasl overlaid with the service's own kafkaSasl. */}}
{{- define "scr.kafkaSasl" -}}
{{- $sasl := deepCopy .root.Values.kafka.sasl -}}
{{- $own := deepCopy (.own | default dict) -}}
{{- $ownSecret := $own.existingSecret | default dict -}}
{{- $_ := unset $own "existingSecret" -}}
{{- $sasl = mergeOverwrite $sasl $own -}}
{{- $secret := mergeOverwrite (deepCopy ($sasl.existingSecret | default dict)) $ownSecret -}}
{{- $_ := set $sasl "existingSecret" $secret -}}
{{- $sasl | toJson -}}
{{- end -}}

{{/* Where the JWKS comes from: "url", "configMap" or "secret" (an inline document becomes a chart ConfigMap). */}}
{{- define "scr.jwksMode" -}}
{{- $j := .Values.jwks -}}
{{- $modes := list -}}
{{- if $j.url }}{{ $modes = append $modes "url" }}{{ end -}}
{{- if $j.json }}{{ $modes = append $modes "inline" }}{{ end -}}
{{- if $j.existingConfigMap.name }}{{ $modes = append $modes "configMap" }}{{ end -}}
{{- if $j.existingSecret.name }}{{ $modes = append $modes "secret" }}{{ end -}}
{{- if ne (len $modes) 1 -}}
{{- fail (printf "set exactly one JWKS source (jwks.url, jwks.json, jwks.existingConfigMap.name or jwks.existingSecret.name); got %d: %s" (len $modes) (join ", " $modes)) -}}
{{- end -}}
{{- first $modes -}}
{{- end -}}

{{- define "scr.jwksMountPath" -}}/etc/scr/jwks{{- end -}}
{{- define "scr.consentTokenMountPath" -}}/var/run/secrets/scr/consent-token{{- end -}}

{{- define "scr.exportKeyMountPath" -}}/var/run/secrets/scr/export-pseudonym-key{{- end -}}

{{- define "scr.jwksLocation" -}}
{{- if eq (include "scr.jwksMode" .) "url" -}}
{{- .Values.jwks.url -}}
{{- else -}}
{{- printf "%s/jwks.json" (include "scr.jwksMountPath" .) -}}
{{- end -}}
{{- end -}}

{{/* The JWKS volume (nothing for a URL). Whole-directory mounts, never subPath, so rotation reaches the pods. */}}
{{- define "scr.jwksVolume" -}}
{{- $mode := include "scr.jwksMode" . -}}
{{- if eq $mode "configMap" }}
- name: jwks
  configMap:
    name: {{ .Values.jwks.existingConfigMap.name }}
    items:
      - {key: {{ .Values.jwks.existingConfigMap.key | quote }}, path: jwks.json}
{{- else if eq $mode "inline" }}
- name: jwks
  configMap:
    name: {{ include "scr.fullname" . }}-jwks
    items:
      - {key: jwks.json, path: jwks.json}
{{- else if eq $mode "secret" }}
- name: jwks
  secret:
    secretName: {{ .Values.jwks.existingSecret.name }}
    items:
      - {key: {{ .Values.jwks.existingSecret.key | quote }}, path: jwks.json}
{{- end }}
{{- end -}}

{{- define "scr.consentUrl" -}}
{{- .Values.services.recordApi.consentUrl | default (printf "http://%s-consent:8003" (include "scr.fullname" .)) -}}
{{- end -}}

{{/* A NetworkPolicy rule's peer list; an empty list omits the field, which Kubernetes reads as "any peer". */}}
{{- define "scr.peers" -}}
{{- if .peers -}}
{{ .key }}:
{{ toYaml .peers | indent 2 }}
{{- end -}}
{{- end -}}
