{{/*
The Deployment of one role (api or dispatcher): same image, the role as the
argument. Include with (dict "root" $ "component" "api" "role" .Values.api
"fixedReplicas" true).
*/}}
{{- define "hookgate.deployment" -}}
{{- $root := .root }}
{{- $role := .role }}
{{- $name := printf "%s-%s" (include "hookgate.fullname" $root) .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "hookgate.componentLabels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  {{- if .fixedReplicas }}
  replicas: {{ $role.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "hookgate.componentSelectorLabels" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "hookgate.componentSelectorLabels" (dict "root" $root "component" .component) | nindent 8 }}
        {{- with $role.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Roll the pods when their settings or credentials change.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if not $root.Values.secret.existingSecret }}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- end }}
        {{- with $role.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "hookgate.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $role.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $role.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "hookgate.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - {{ .component }}
          ports:
            - name: http
              containerPort: 8080
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ $name }}
          env:
            {{- include "hookgate.secretEnv" (dict "root" $root "name" "HOOKGATE_DATABASE_URL" "key" $root.Values.secret.keys.databaseUrl) | nindent 12 }}
            {{- if eq .component "api" }}
            {{- include "hookgate.secretEnv" (dict "root" $root "name" "HOOKGATE_ADMIN_TOKEN" "key" $root.Values.secret.keys.adminToken) | nindent 12 }}
            {{- end }}
            {{- with include "hookgate.secretKeyEnv" $root }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with include "hookgate.kafkaSecretEnv" $root | trim }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $role.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "hookgate.probes" (dict "probes" $role.probes) | nindent 10 }}
          resources:
            {{- toYaml $role.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            # The root filesystem is read-only; librdkafka and TLS may want a scratch dir.
            - name: tmp
              mountPath: /tmp
            {{- with $role.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- with $role.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $role.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $role.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $role.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $role.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* A PodDisruptionBudget of one role; same arguments as hookgate.deployment. */}}
{{- define "hookgate.pdb" -}}
{{- if .role.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "hookgate.fullname" .root }}-{{ .component }}
  labels:
    {{- include "hookgate.componentLabels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .role.pdb.minAvailable) }}
  minAvailable: {{ .role.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .role.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "hookgate.componentSelectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
{{- end }}
{{- end }}

{{/* The ClusterIP Service of one role's port 8080. */}}
{{- define "hookgate.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "hookgate.fullname" .root }}-{{ .component }}
  labels:
    {{- include "hookgate.componentLabels" (dict "root" .root "component" .component) | nindent 4 }}
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .type | default "ClusterIP" }}
  selector:
    {{- include "hookgate.componentSelectorLabels" (dict "root" .root "component" .component) | nindent 4 }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: http
      protocol: TCP
{{- end }}
