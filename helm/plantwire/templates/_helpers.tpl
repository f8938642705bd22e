{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "plantwire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; the release name alone when it already holds the chart name. */}}
{{- define "plantwire.fullname" -}}
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

{{- define "plantwire.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "plantwire.labels" -}}
helm.sh/chart: {{ include "plantwire.chart" . }}
app.kubernetes.io/name: {{ include "plantwire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: plantwire
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "collector"). */}}
{{- define "plantwire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plantwire.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of one component's resources: (dict "ctx" $ "component" "collector"). */}}
{{- define "plantwire.componentLabels" -}}
{{ include "plantwire.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "plantwire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "plantwire.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag of an image section: (dict "ctx" $ "image" .Values.collector.image). */}}
{{- define "plantwire.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "plantwire.secretName" -}}
{{- include "plantwire.fullname" . -}}
{{- end -}}

{{- define "plantwire.databaseSecretName" -}}
{{- default (include "plantwire.secretName" .) .Values.externalDatabase.existingSecret -}}
{{- end -}}

{{- define "plantwire.mqttSecretName" -}}
{{- default (include "plantwire.secretName" .) .Values.externalMqtt.existingSecret -}}
{{- end -}}

{{- define "plantwire.redisSecretName" -}}
{{- default (include "plantwire.secretName" .) .Values.externalRedis.existingSecret -}}
{{- end -}}

{{- define "plantwire.agentMqttSecretName" -}}
{{- default (include "plantwire.secretName" .) .Values.agent.mqtt.existingSecret -}}
{{- end -}}

{{/* Pod-level part of the restricted security context (Pod Security Standards "restricted"). */}}
{{- define "plantwire.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1001
runAsGroup: 1001
fsGroup: 1001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level part of the restricted security context. */}}
{{- define "plantwire.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1001
runAsGroup: 1001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "plantwire.mqttTlsDir" -}}/etc/plantwire/mqtt-tls{{- end -}}

{{/* The collector's configuration file: the values' keys plus the ones the chart decides. */}}
{{- define "plantwire.collectorConfig" -}}
{{- $mqtt := dict "url" .Values.externalMqtt.url -}}
{{- with .Values.externalMqtt.tls.existingSecret -}}
{{- $_ := set $mqtt "ca_file" (printf "%s/ca.crt" (include "plantwire.mqttTlsDir" $)) -}}
{{- if $.Values.externalMqtt.tls.clientCertificate -}}
{{- $_ := set $mqtt "cert_file" (printf "%s/tls.crt" (include "plantwire.mqttTlsDir" $)) -}}
{{- $_ := set $mqtt "key_file" (printf "%s/tls.key" (include "plantwire.mqttTlsDir" $)) -}}
{{- end -}}
{{- end -}}
{{- $http := dict "host" "0.0.0.0" "port" (int .Values.collector.service.port) "ops_port" (int .Values.collector.service.opsPort) -}}
{{- $database := dict "migrate_on_start" (not .Values.migrations.enabled) -}}
{{- $owned := dict "mqtt" $mqtt "http" $http "database" $database -}}
{{- if .Values.collector.equipment -}}
{{- $_ := set $owned "equipment" (dict "file" (include "plantwire.equipmentPath" .)) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite (deepCopy .Values.collector.config) $owned) -}}
{{- end -}}

{{- define "plantwire.equipmentPath" -}}/etc/plantwire/equipment.yaml{{- end -}}

{{/* The collector's equipment file: collector.equipment as YAML (empty without one). */}}
{{- define "plantwire.equipmentFile" -}}
{{- with .Values.collector.equipment -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{- define "plantwire.agentBufferDir" -}}/var/lib/plantwire{{- end -}}

{{/* The agent's configuration file: the values' keys plus the ones the chart decides. */}}
{{- define "plantwire.agentConfig" -}}
{{- $mqtt := dict "url" (default .Values.externalMqtt.url .Values.agent.mqttUrl) -}}
{{- if .Values.externalMqtt.tls.existingSecret -}}
{{- $_ := set $mqtt "ca_file" (printf "%s/ca.crt" (include "plantwire.mqttTlsDir" .)) -}}
{{- end -}}
{{- $agent := dict "http_host" "0.0.0.0" "http_port" (int .Values.agent.httpPort) -}}
{{- $buffer := dict "path" (printf "%s/buffer.sqlite" (include "plantwire.agentBufferDir" .)) -}}
{{- $owned := dict "agent" $agent "buffer" $buffer "mqtt" $mqtt -}}
{{- toYaml (mustMergeOverwrite (deepCopy .Values.agent.config) $owned) -}}
{{- end -}}

{{/* Environment of a container that reads the database URL from a Secret. */}}
{{- define "plantwire.databaseEnv" -}}
- name: PLANTWIRE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "plantwire.databaseSecretName" . }}
      key: {{ if .Values.externalDatabase.existingSecret }}{{ .Values.externalDatabase.existingSecretKeys.url }}{{ else }}database-url{{ end }}
{{- end -}}

{{/* Secrets of the collector, as environment variables its configuration loader reads. */}}
{{- define "plantwire.collectorEnv" -}}
{{ include "plantwire.databaseEnv" . }}
{{- if .Values.externalDatabase.existingSecret }}
- name: PLANTWIRE_DATABASE_READ_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalDatabase.existingSecret }}
      key: {{ .Values.externalDatabase.existingSecretKeys.readUrl }}
      optional: true
{{- else if .Values.externalDatabase.readUrl }}
- name: PLANTWIRE_DATABASE_READ_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "plantwire.secretName" . }}
      key: database-read-url
{{- end }}
{{- if .Values.externalMqtt.existingSecret }}
{{- range $variable, $key := dict "PLANTWIRE_MQTT_USERNAME" .Values.externalMqtt.existingSecretKeys.username "PLANTWIRE_MQTT_PASSWORD" .Values.externalMqtt.existingSecretKeys.password }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.externalMqtt.existingSecret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- else if .Values.externalMqtt.username }}
- name: PLANTWIRE_MQTT_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "plantwire.secretName" . }}
      key: mqtt-username
{{- if .Values.externalMqtt.password }}
- name: PLANTWIRE_MQTT_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "plantwire.secretName" . }}
      key: mqtt-password
{{- end }}
{{- end }}
{{- if or .Values.externalRedis.existingSecret .Values.externalRedis.url }}
- name: PLANTWIRE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "plantwire.redisSecretName" . }}
      key: {{ if .Values.externalRedis.existingSecret }}{{ .Values.externalRedis.existingSecretKey }}{{ else }}redis-url{{ end }}
{{- end }}
{{- end -}}

{{/* Secrets of the agent, as environment variables its configuration loader reads. */}}
{{- define "plantwire.agentEnv" -}}
{{- if .Values.agent.mqtt.existingSecret }}
{{- range $variable, $key := dict "PLANTWIRE_MQTT_USERNAME" .Values.agent.mqtt.existingSecretKeys.username "PLANTWIRE_MQTT_PASSWORD" .Values.agent.mqtt.existingSecretKeys.password }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.agent.mqtt.existingSecret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- else if .Values.agent.mqtt.username }}
- name: PLANTWIRE_MQTT_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "plantwire.secretName" . }}
      key: agent-mqtt-username
{{- if .Values.agent.mqtt.password }}
- name: PLANTWIRE_MQTT_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "plantwire.secretName" . }}
      key: agent-mqtt-password
{{- end }}
{{- end }}
{{- end -}}

{{/* The keys of this chart's own Secret: whatever no existing Secret provides. */}}
{{- define "plantwire.secretData" -}}
{{- $data := dict -}}
{{- if not .Values.externalDatabase.existingSecret -}}
{{- $_ := set $data "database-url" .Values.externalDatabase.url -}}
{{- with .Values.externalDatabase.readUrl }}{{ $_ := set $data "database-read-url" . }}{{ end -}}
{{- end -}}
{{- if and (not .Values.externalMqtt.existingSecret) .Values.externalMqtt.username -}}
{{- $_ := set $data "mqtt-username" .Values.externalMqtt.username -}}
{{- with .Values.externalMqtt.password }}{{ $_ := set $data "mqtt-password" . }}{{ end -}}
{{- end -}}
{{- if and (not .Values.externalRedis.existingSecret) .Values.externalRedis.url -}}
{{- $_ := set $data "redis-url" .Values.externalRedis.url -}}
{{- end -}}
{{- if and .Values.agent.enabled (not .Values.agent.mqtt.existingSecret) .Values.agent.mqtt.username -}}
{{- $_ := set $data "agent-mqtt-username" .Values.agent.mqtt.username -}}
{{- with .Values.agent.mqtt.password }}{{ $_ := set $data "agent-mqtt-password" . }}{{ end -}}
{{- end -}}
{{- toJson $data -}}
{{- end -}}
