{{/* Chart name. */}}
{{- define "refsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name unless it already contains it. */}}
{{- define "refsync.fullname" -}}
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

{{- define "refsync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "refsync.labels" -}}
app.kubernetes.io/name: {{ include "refsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "refsync.versionLabels" . }}
{{- end }}

{{/* Labels besides the selector's (pod templates add them to the selector labels). */}}
{{- define "refsync.versionLabels" -}}
helm.sh/chart: {{ include "refsync.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector of the controller pods. */}}
{{- define "refsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "refsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Selector of the webhook pods. */}}
{{- define "refsync.webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "refsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "refsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "refsync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "refsync.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Webhook object names: Service, ValidatingWebhookConfiguration, certificate Secret. */}}
{{- define "refsync.webhook.name" -}}
{{- printf "%s-webhook" (include "refsync.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "refsync.webhook.certSecret" -}}
{{- printf "%s-webhook-cert" (include "refsync.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Chart-level checks (rendered into nothing). */}}
{{- define "refsync.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true (otherwise every replica writes)" }}
{{- end }}
{{- if not (has .Values.log.format (list "text" "json")) }}
{{- fail (printf "log.format must be text or json, not %q" .Values.log.format) }}
{{- end }}
{{- if not (has .Values.webhook.failurePolicy (list "Fail" "Ignore")) }}
{{- fail (printf "webhook.failurePolicy must be Fail or Ignore, not %q" .Values.webhook.failurePolicy) }}
{{- end }}
{{- if or (lt (int .Values.webhook.timeoutSeconds) 1) (gt (int .Values.webhook.timeoutSeconds) 30) }}
{{- fail "webhook.timeoutSeconds must be between 1 and 30 (the apiserver's limits)" }}
{{- end }}
{{- end }}

{{/* Controller RBAC rules for the namespaced resources (ClusterRole or Role). */}}
{{- define "refsync.rules.namespaced" }}
# ExternalSecrets and SecretStores: reflector caches (list/watch), status by server-side apply.
- apiGroups: ["external-secrets.io"]
  resources: ["externalsecrets", "secretstores"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["external-secrets.io"]
  resources: ["externalsecrets/status", "secretstores/status"]
  verbs: ["patch"]
# A deleted ExternalSecret: ESO's cleanup finalizer is removed (merge patch of
# metadata.finalizers).
- apiGroups: ["external-secrets.io"]
  resources: ["externalsecrets"]
  verbs: ["patch"]
# Secrets: managed Secrets watched label-selected (list/watch), credentials and merge targets
# read on demand (get), written by server-side apply (patch; create when the apply creates it),
# removed by deletionPolicy Delete and target renames (delete).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# templateFrom ConfigMaps and CA bundles referenced by stores.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
{{- if .Values.rbac.serviceAccountTokens }}
# ServiceAccount-token authentication of stores (TokenRequest).
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
{{- end }}
# ESO's Events (kube-runtime's recorder creates, then patches repeats into a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Controller RBAC rules for ClusterSecretStores. */}}
{{- define "refsync.rules.clusterStores" }}
- apiGroups: ["external-secrets.io"]
  resources: ["clustersecretstores"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["external-secrets.io"]
  resources: ["clustersecretstores/status"]
  verbs: ["patch"]
{{- end }}
