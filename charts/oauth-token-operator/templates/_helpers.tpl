{{/* Chart name. */}}
{{- define "oauth-token-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name, used as the prefix of every resource. */}}
{{- define "oauth-token-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "oauth-token-operator.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "oauth-token-operator.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Common labels. */}}
{{- define "oauth-token-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "oauth-token-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels. */}}
{{- define "oauth-token-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oauth-token-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount name. */}}
{{- define "oauth-token-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "oauth-token-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The controller's RBAC rules: exactly what it uses, nothing more. A test
(tests/rbac.rs) checks these against every API call the controller makes in the
tests, in both directions. Keep this block plain YAML.
*/}}
{{- define "oauth-token-operator.rules" -}}
- apiGroups: ["oauth.token-operator.dev"]
  resources: ["oauthclients"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["oauth.token-operator.dev"]
  resources: ["oauthclients/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* The seal key Secret in the release namespace (read, or created on first start). Keep this
block plain YAML. */}}
{{- define "oauth-token-operator.sealKeyRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: ["oauth-token-operator-seal-key"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
{{- end }}

{{/* With clusterOAuthClients.enabled, cluster-wide: ClusterOAuthClients, the namespaces they
select, and the removal of a copy from a namespace that stops matching. Keep this block plain
YAML: tests/rbac.rs reads it. */}}
{{- define "oauth-token-operator.clusterClientRules" -}}
- apiGroups: ["oauth.token-operator.dev"]
  resources: ["clusteroauthclients"]
  verbs: ["list", "watch"]
- apiGroups: ["oauth.token-operator.dev"]
  resources: ["clusteroauthclients/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["delete"]
{{- end }}

{{/* With clusterOAuthClients.enabled, in the cluster resource namespace: the OAuthClient that
obtains each ClusterOAuthClient's token. Keep this block plain YAML. */}}
{{- define "oauth-token-operator.clusterClientResourceRules" -}}
- apiGroups: ["oauth.token-operator.dev"]
  resources: ["oauthclients"]
  verbs: ["create", "patch"]
{{- end }}

{{/* With serviceAccountTokens.enabled: read ServiceAccounts (their opt-in annotation) and
request their tokens. Keep this block plain YAML: tests/rbac.rs reads it. */}}
{{- define "oauth-token-operator.serviceAccountTokenRules" -}}
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
{{- end }}

{{/* With metrics.secure: the reviews of whoever reads /metrics (cluster-scoped kinds, so a
ClusterRole even for a namespaced install). Keep this block plain YAML. */}}
{{- define "oauth-token-operator.metricsAuthRules" -}}
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
{{- end }}

{{/* Leader election: the Lease in the release namespace. Keep this block plain YAML. */}}
{{- define "oauth-token-operator.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "patch"]
{{- end }}

{{/* NO_PROXY: proxy.noProxy, a list or one comma-separated string. */}}
{{- define "oauth-token-operator.noProxy" -}}
{{- if kindIs "string" .Values.proxy.noProxy }}
{{- .Values.proxy.noProxy }}
{{- else }}
{{- join "," .Values.proxy.noProxy }}
{{- end }}
{{- end }}

{{/* The ports of proxy.httpsProxy and proxy.httpProxy (for the NetworkPolicy), one per line. */}}
{{- define "oauth-token-operator.proxyPorts" -}}
{{- range (list .Values.proxy.httpsProxy .Values.proxy.httpProxy) }}
{{- if . }}
{{- $url := urlParse (ternary . (printf "http://%s" .) (contains "://" .)) }}
{{- $port := trimPrefix ":" (regexFind ":[0-9]+$" $url.host) }}
{{- if not $port }}{{ $port = ternary "443" "80" (eq $url.scheme "https") }}{{ end }}
{{ $port }}
{{- end }}
{{- end }}
{{- end }}
