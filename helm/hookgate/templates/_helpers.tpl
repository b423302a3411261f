{{/* Names and labels shared by every template. */}}

{{- define "hookgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hookgate.fullname" -}}
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

{{- define "hookgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hookgate.labels" -}}
helm.sh/chart: {{ include "hookgate.chart" . }}
{{ include "hookgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "hookgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hookgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one role: include with (dict "root" $ "component" "api"). */}}
{{- define "hookgate.componentLabels" -}}
{{ include "hookgate.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "hookgate.componentSelectorLabels" -}}
{{ include "hookgate.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "hookgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hookgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hookgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "hookgate.secretName" -}}
{{- default (include "hookgate.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/* Partitions of the deliveries topic: the most dispatchers that get work. */}}
{{- define "hookgate.partitions" -}}
{{- $p := int .Values.dispatcher.autoscaling.partitions }}
{{- if le $p 0 }}{{ $p = int .Values.topics.partitions }}{{ end }}
{{- $p }}
{{- end }}

{{/* One environment variable from the Secret. */}}
{{- define "hookgate.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "hookgate.secretName" .root }}
      key: {{ .key }}
{{- if .optional }}
      optional: true
{{- end }}
{{- end }}

{{/*
Whether HOOKGATE_SECRET_KEY is passed: the chart's Secret has a value, or an
existing Secret may hold the key (then it is optional).
*/}}
{{- define "hookgate.secretKeyEnv" -}}
{{- if .Values.secret.existingSecret }}
{{- include "hookgate.secretEnv" (dict "root" . "name" "HOOKGATE_SECRET_KEY" "key" .Values.secret.keys.secretKey "optional" true) }}
{{- else if .Values.secret.secretKey }}
{{- include "hookgate.secretEnv" (dict "root" . "name" "HOOKGATE_SECRET_KEY" "key" .Values.secret.keys.secretKey) }}
{{- end }}
{{- end }}

{{/* Kafka SASL credentials, from the Secret. */}}
{{- define "hookgate.kafkaSecretEnv" -}}
{{- if .Values.kafka.sasl.enabled }}
{{ include "hookgate.secretEnv" (dict "root" . "name" "HOOKGATE_KAFKA_SASL_USERNAME" "key" .Values.secret.keys.kafkaSaslUsername) }}
{{ include "hookgate.secretEnv" (dict "root" . "name" "HOOKGATE_KAFKA_SASL_PASSWORD" "key" .Values.secret.keys.kafkaSaslPassword) }}
{{- end }}
{{- end }}

{{/* Settings of every role that talks to Kafka (api and dispatcher ConfigMaps). */}}
{{- define "hookgate.kafkaConfig" -}}
HOOKGATE_KAFKA_BROKERS: {{ required "kafka.brokers is required" .Values.kafka.brokers | quote }}
HOOKGATE_KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.sasl.enabled }}
HOOKGATE_KAFKA_SASL_MECHANISMS: {{ .Values.kafka.sasl.mechanism | quote }}
{{- end }}
{{- range $property, $value := .Values.kafka.properties }}
{{- if or (contains "_" $property) (not (regexMatch "^[a-z0-9.]+$" $property)) }}
{{- fail (printf "kafka.properties: %q is not a librdkafka property name (lower case, dot-separated)" $property) }}
{{- end }}
{{- if regexMatch "(password|secret)" $property }}
{{- fail (printf "kafka.properties: %q is a credential; it belongs in the Secret, not a ConfigMap" $property) }}
{{- end }}
HOOKGATE_KAFKA_{{ $property | replace "." "_" | upper }}: {{ $value | toString | quote }}
{{- end }}
HOOKGATE_TOPICS: {{ join "," .Values.topics.source | quote }}
{{- with .Values.topics.publish }}
HOOKGATE_PUBLISH_TOPIC: {{ . | quote }}
{{- end }}
HOOKGATE_DELIVERIES_TOPIC: {{ .Values.topics.deliveries | quote }}
HOOKGATE_RETRY_TOPIC_PREFIX: {{ .Values.topics.retryPrefix | quote }}
HOOKGATE_DLQ_TOPIC: {{ .Values.topics.dlq | quote }}
HOOKGATE_OPERATIONAL_TOPIC: {{ .Values.topics.operational | quote }}
HOOKGATE_PARTITIONS: {{ .Values.topics.partitions | toString | quote }}
HOOKGATE_REPLICATION_FACTOR: {{ .Values.topics.replicationFactor | toString | quote }}
HOOKGATE_GROUP_ID: {{ .Values.topics.groupId | quote }}
{{- end }}

{{/* Settings of every role: listen address, logs, traces. */}}
{{- define "hookgate.commonConfig" -}}
HOOKGATE_LISTEN: "0.0.0.0:8080"
HOOKGATE_LOG_FORMAT: {{ .Values.logging.format | quote }}
{{- with .Values.logging.level }}
RUST_LOG: {{ . | quote }}
{{- end }}
{{- with .Values.tracing.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
OTEL_SERVICE_NAME: {{ .Values.tracing.serviceName | quote }}
HOOKGATE_MAX_IN_FLIGHT_LIMIT: {{ .Values.delivery.maxInFlightLimit | toString | quote }}
HOOKGATE_ALLOW_PRIVATE_TARGETS: {{ .Values.delivery.allowPrivateTargets | toString | quote }}
{{- with .Values.egress.allowedNetworks }}
HOOKGATE_EGRESS_ALLOWED_NETWORKS: {{ . | quote }}
{{- end }}
{{- with .Values.egress.deniedNetworks }}
HOOKGATE_EGRESS_DENIED_NETWORKS: {{ . | quote }}
{{- end }}
{{- with .Values.egress.allowedPorts }}
HOOKGATE_EGRESS_ALLOWED_PORTS: {{ . | quote }}
{{- end }}
{{- with .Values.egress.proxy }}
HOOKGATE_EGRESS_PROXY: {{ . | quote }}
{{- end }}
HOOKGATE_HEADER_READ_TIMEOUT: {{ .Values.server.headerReadTimeout | quote }}
HOOKGATE_API_REQUEST_TIMEOUT: {{ .Values.server.requestTimeout | quote }}
HOOKGATE_BODY_TIMEOUT: {{ .Values.server.bodyTimeout | quote }}
HOOKGATE_MAX_CONNECTIONS: {{ .Values.server.maxConnections | toString | quote }}
HOOKGATE_CONNECTION_DRAIN_TIMEOUT: {{ .Values.server.connectionDrainTimeout | quote }}
HOOKGATE_DB_STATEMENT_TIMEOUT: {{ .Values.server.dbStatementTimeout | quote }}
{{- end }}

{{/* Probes on the ops endpoint; include with (dict "probes" .Values.api.probes). */}}
{{- define "hookgate.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  {{- toYaml .probes.startup | nindent 2 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  {{- toYaml .probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  {{- toYaml .probes.readiness | nindent 2 }}
{{- end }}

{{/* Refuse values that would deploy something broken. */}}
{{- define "hookgate.validate" -}}
{{- $partitions := int (include "hookgate.partitions" .) }}
{{- $as := .Values.dispatcher.autoscaling }}
{{- if and .Values.dispatcher.enabled $as.enabled }}
{{- if gt (int $as.maxReplicas) $partitions }}
{{- fail (printf "dispatcher.autoscaling.maxReplicas (%d) is more than the deliveries topic's %d partitions: the extra dispatchers would get no partition" (int $as.maxReplicas) $partitions) }}
{{- end }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail "dispatcher.autoscaling.minReplicas is more than maxReplicas" }}
{{- end }}
{{- if not (has $as.mode (list "keda" "hpa")) }}
{{- fail (printf "dispatcher.autoscaling.mode must be keda or hpa, not %q" $as.mode) }}
{{- end }}
{{- else if and .Values.dispatcher.enabled (gt (int .Values.dispatcher.replicas) $partitions) }}
{{- fail (printf "dispatcher.replicas (%d) is more than the deliveries topic's %d partitions: the extra dispatchers would get no partition" (int .Values.dispatcher.replicas) $partitions) }}
{{- end }}
{{- if not (has .Values.logging.format (list "text" "json")) }}
{{- fail (printf "logging.format must be text or json, not %q" .Values.logging.format) }}
{{- end }}
{{- if and .Values.kafka.sasl.enabled (not .Values.secret.existingSecret) (or (not .Values.secret.kafkaSaslUsername) (not .Values.secret.kafkaSaslPassword)) }}
{{- fail "kafka.sasl.enabled needs secret.kafkaSaslUsername and secret.kafkaSaslPassword (or secret.existingSecret)" }}
{{- end }}
{{- if and (not .Values.secret.existingSecret) (not .Values.secret.databaseUrl) }}
{{- fail "secret.databaseUrl is required (or secret.existingSecret)" }}
{{- end }}
{{- end }}
