{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "paygate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: <release>-<chart>, or the release name alone when it already contains the
chart name. Truncated to 63 characters.
*/}}
{{- define "paygate.fullname" -}}
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

{{/*
Chart label value: <name>-<version>.
*/}}
{{- define "paygate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "paygate.labels" -}}
helm.sh/chart: {{ include "paygate.chart" . }}
{{ include "paygate.selectorLabels" . }}
app.kubernetes.io/version: {{ include "paygate.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: paygate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: stable across upgrades, never add to them.
*/}}
{{- define "paygate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paygate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the migration Job and its pod. Its `app.kubernetes.io/name` differs from the
selector's, so the Service, the PodDisruptionBudget and the NetworkPolicy never select it.
*/}}
{{- define "paygate.migrateLabels" -}}
helm.sh/chart: {{ include "paygate.chart" . }}
app.kubernetes.io/name: {{ printf "%s-migrate" (include "paygate.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "paygate.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: migrate
app.kubernetes.io/part-of: paygate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Name of the migration Job.
*/}}
{{- define "paygate.migrateJobName" -}}
{{- printf "%s-migrate" (include "paygate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
ServiceAccount the pods run as.
*/}}
{{- define "paygate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "paygate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of the migration Job. It runs before the release's own objects exist, so it
cannot use a ServiceAccount the chart creates: migrations.serviceAccountName, else the pods'
ServiceAccount when the chart does not create it, else `default`.
*/}}
{{- define "paygate.migrateServiceAccountName" -}}
{{- if .Values.migrations.serviceAccountName }}
{{- .Values.migrations.serviceAccountName }}
{{- else if not .Values.serviceAccount.create }}
{{- default "default" .Values.serviceAccount.name }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/*
Image tag: image.tag, else the chart's appVersion.
*/}}
{{- define "paygate.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{/*
Where the config file and the secret files are mounted in the container. Sibling directories:
a volume mounted inside another (read-only, atomically updated) volume is not portable.
*/}}
{{- define "paygate.configDir" -}}/etc/paygate/config{{- end }}
{{- define "paygate.configFile" -}}{{ include "paygate.configDir" . }}/paygate.toml{{- end }}
{{- define "paygate.secretsDir" -}}/etc/paygate/secrets{{- end }}
{{- define "paygate.databaseUrlFile" -}}{{ include "paygate.secretsDir" . }}/database-url{{- end }}

{{/*
Credential keys of each provider's account (its `Secret`-typed config fields; .ci/chart-check
compares this list with src/providers/<name>/config.rs). Each must be a key of the account's
Secret; the sandbox is never enabled by this chart and has none here.
*/}}
{{- define "paygate.providerCredentials" -}}
eximpe: [client_secret, callback_key]
xpay: [secret_key, webhook_secrets]
hitpay: [api_key, salt]
xstak: [api_key, hmac_secret, webhook_secret]
exirom: [merchant_key, merchant_secret]
{{- end }}

{{/*
Every Secret the pods read, as a list of {secret, items: [{key, path}]} (paths relative to
paygate.secretsDir), and the `_file` config keys that name them. Input: the root context.
*/}}
{{- define "paygate.secretSources" -}}
{{- $sources := list (dict "secret" .Values.database.existingSecret "items" (list (dict "key" .Values.database.secretKey "path" (base (include "paygate.databaseUrlFile" .))))) }}
{{- $credentials := include "paygate.providerCredentials" . | fromYaml }}
{{- range $provider, $section := .Values.providers }}
{{- if $section.enabled }}
{{- range $account, $a := $section.accounts }}
{{- $items := list }}
{{- range $key := concat (get $credentials $provider) ($a.extraSecretKeys | default list) }}
{{- $items = append $items (dict "key" $key "path" (printf "providers/%s/%s/%s" $provider $account $key)) }}
{{- end }}
{{- $sources = append $sources (dict "secret" $a.secretName "items" $items) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $caller, $c := .Values.auth.callers }}
{{- $sources = append $sources (dict "secret" $c.secretName "items" (list (dict "key" ($c.secretKey | default "token_sha256") "path" (printf "callers/%s/token_sha256" $caller)))) }}
{{- end }}
{{- with .Values.tls }}
{{- if .secretName }}
{{- $sources = append $sources (dict "secret" .secretName "items" (list (dict "key" "tls.crt" "path" "tls/tls.crt") (dict "key" "tls.key" "path" "tls/tls.key"))) }}
{{- end }}
{{- if .clientCaSecretName }}
{{- $sources = append $sources (dict "secret" .clientCaSecretName "items" (list (dict "key" .clientCaKey "path" "tls/client-ca.crt"))) }}
{{- end }}
{{- end }}
{{- toYaml (dict "sources" $sources) }}
{{- end }}

{{/*
A value from values.yaml as a TOML value: strings through toJson (a JSON string is a valid TOML
basic string), whole numbers without a fraction, lists as arrays, maps as inline tables.
*/}}
{{- define "paygate.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "map" $v -}}
{ {{- $first := true }}{{ range $k, $x := $v }}{{ if not $first }},{{ end }}{{ $first = false }} {{ $k | toString | toJson }} = {{ include "paygate.tomlValue" $x }}{{ end }} }
{{- else if kindIs "slice" $v -}}
[{{ range $i, $x := $v }}{{ if $i }}, {{ end }}{{ include "paygate.tomlValue" $x }}{{ end }}]
{{- else if kindIs "string" $v -}}
{{ $v | toJson }}
{{- else if kindIs "bool" $v -}}
{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) -}}
{{ if eq (float64 $v) (float64 (int64 $v)) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else -}}
{{ fail (printf "cannot write %v (%s) as a TOML value" $v (kindOf $v)) }}
{{- end -}}
{{- end }}

{{/*
The TOML configuration file. Strings go through toJson: a JSON string is a valid TOML basic string.
Keys the chart fixes (see values.yaml) are not taken from values.
*/}}
{{- define "paygate.configToml" -}}
{{- $c := .Values.config -}}
# paygate configuration, rendered by the paygate Helm chart (values.yaml `config`).
# Env vars PAYGATE_<SECTION>__<KEY> override it; `paygate check-config` shows the effective result.

{{- $secrets := include "paygate.secretsDir" . }}
[server]
grpc_addr = {{ printf "0.0.0.0:%d" (int .Values.ports.grpc) | toJson }}
http_addr = {{ printf "0.0.0.0:%d" (int .Values.ports.http) | toJson }}
# Prometheus metrics (values `metrics.enabled`); empty = off.
metrics_addr = {{ ternary (printf "0.0.0.0:%d" (int .Values.ports.metrics)) "" .Values.metrics.enabled | toJson }}
public_base_url = {{ $c.publicBaseUrl | toString | toJson }}
shutdown_grace_secs = {{ int $c.shutdownGraceSecs }}
{{- with .Values.tls }}
{{- if .secretName }}

# gRPC TLS from Secret {{ .secretName }}{{ if .clientCaSecretName }}; client certificates (mTLS) signed by the CA in {{ .clientCaSecretName }}{{ end }}.
[server.tls]
cert_file = {{ printf "%s/tls/tls.crt" $secrets | toJson }}
key_file = {{ printf "%s/tls/tls.key" $secrets | toJson }}
{{- if .clientCaSecretName }}
client_ca_file = {{ printf "%s/tls/client-ca.crt" $secrets | toJson }}
{{- end }}
{{- end }}
{{- end }}

[database]
# url: read from the Secret {{ .Values.database.existingSecret }} via PAYGATE_DATABASE__URL_FILE.
max_connections = {{ int $c.database.maxConnections }}
acquire_timeout_ms = {{ int $c.database.acquireTimeoutMs }}
# The database is provisioned by the operators; paygate only applies its migrations.
create_if_missing = false
# Migrations are applied by the pre-install/pre-upgrade Job (`paygate migrate`), not by each pod;
# a pod whose schema is behind waits for it and is not ready.
migrate_on_start = false

[telemetry]
log_filter = {{ $c.telemetry.logFilter | toString | toJson }}
log_format = {{ $c.telemetry.logFormat | toString | toJson }}
otlp_endpoint = {{ $c.telemetry.otlpEndpoint | toString | toJson }}

# The sandbox provider's hosted page lets anyone mark a payment paid: never enabled in a cluster.
[providers.sandbox]
enabled = false
{{- $credentials := include "paygate.providerCredentials" . | fromYaml }}
{{- range $provider, $section := .Values.providers }}

[providers.{{ $provider }}]
enabled = {{ $section.enabled }}
{{- if $section.enabled }}
{{- range $account, $a := $section.accounts }}

# Credentials: files from Secret {{ $a.secretName }}.
[providers.{{ $provider }}.accounts.{{ $account }}]
{{- range $key, $value := omit $a "secretName" "extraSecretKeys" }}
{{ $key }} = {{ include "paygate.tomlValue" $value }}
{{- end }}
{{- range $key := concat (get $credentials $provider) ($a.extraSecretKeys | default list) }}
{{ $key }}_file = {{ printf "%s/providers/%s/%s/%s" $secrets $provider $account $key | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $caller, $a := .Values.auth.callers }}

# Bearer token hashes: file from Secret {{ $a.secretName }}.
[auth.callers.{{ $caller }}]
permissions = {{ include "paygate.tomlValue" $a.permissions }}
{{- if $a.providers }}
providers = {{ include "paygate.tomlValue" $a.providers }}
{{- end }}
token_sha256_file = {{ printf "%s/callers/%s/token_sha256" $secrets $caller | toJson }}
{{- end }}
{{- end }}

{{/*
Fails rendering on values that would give a pod that cannot work.
*/}}
{{- define "paygate.validate" -}}
{{- if not .Values.database.existingSecret }}
{{- fail "database.existingSecret is required: the name of an existing Secret holding the database URL (key database.secretKey)" }}
{{- end }}
{{- if not .Values.database.secretKey }}
{{- fail "database.secretKey must name the key of the database URL in database.existingSecret" }}
{{- end }}
{{- $url := .Values.config.publicBaseUrl | toString }}
{{- if and $url (or (not (regexMatch "^https?://[^/?#\\s]+(/[^?#\\s]*)?$" $url)) (hasSuffix "/" $url)) }}
{{- fail (printf "config.publicBaseUrl %q: must be an absolute http(s) URL without a trailing /" $url) }}
{{- end }}
{{- include "paygate.validateSecrets" . }}
{{- include "paygate.validateRoutes" . }}
{{- $preStop := 0 }}
{{- with .Values.lifecycle }}{{ with .preStop }}{{ with .sleep }}{{ $preStop = int .seconds }}{{ end }}{{ end }}{{ end }}
{{- $needed := add $preStop (int .Values.config.shutdownGraceSecs) }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed the preStop sleep plus config.shutdownGraceSecs (%d)" (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- end }}

{{/*
Credentials only ever come from existing Secrets: refuses accounts without one, credentials
written as values, and callers missing when caller authentication is required.
*/}}
{{- define "paygate.validateSecrets" -}}
{{- $credentials := include "paygate.providerCredentials" . | fromYaml }}
{{- range $provider, $section := .Values.providers }}
{{- range $account, $a := $section.accounts }}
{{- $at := printf "providers.%s.accounts.%s" $provider $account }}
{{- if not $a.secretName }}
{{- fail (printf "%s.secretName is required: the name of an existing Secret with the keys %s (credentials are never taken from values)" $at (concat (get $credentials $provider) ($a.extraSecretKeys | default list) | join ", ")) }}
{{- end }}
{{- range $key, $_ := $a }}
{{- if has $key (get $credentials $provider) }}
{{- fail (printf "%s.%s is a credential: put it in Secret %s under the key %s, never in values" $at $key $a.secretName $key) }}
{{- end }}
{{- if has $key ($a.extraSecretKeys | default list) }}
{{- fail (printf "%s.%s is listed in extraSecretKeys: it is read from Secret %s, remove the value" $at $key $a.secretName) }}
{{- end }}
{{- if hasSuffix "_file" $key }}
{{- fail (printf "%s.%s: the chart writes the `_file` keys itself (from secretName)" $at $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $caller, $c := .Values.auth.callers }}
{{- if not $c.secretName }}
{{- fail (printf "auth.callers.%s.secretName is required: an existing Secret whose key %s holds the hex SHA-256 of the caller's bearer token(s), comma-separated" $caller ($c.secretKey | default "token_sha256")) }}
{{- end }}
{{- end }}
{{- if and (not .Values.auth.callers) (not .Values.auth.allowUnauthenticated) }}
{{- fail "auth.callers is empty, so any client that reaches the gRPC port could create, read and cancel payments: add callers (auth.callers.<name>.secretName, an existing Secret with the SHA-256 of each caller's bearer token, and permissions), or set auth.allowUnauthenticated: true to run without caller authentication" }}
{{- end }}
{{- if and .Values.tls.clientCaSecretName (not .Values.tls.secretName) }}
{{- fail "tls.clientCaSecretName needs tls.secretName: client certificates are only asked for over TLS" }}
{{- end }}
{{- end }}

{{/*
Ingress, HTTPRoute, ServiceMonitor and NetworkPolicy need settings that exist.
*/}}
{{- define "paygate.validateRoutes" -}}
{{- $url := .Values.config.publicBaseUrl | toString }}
{{- if or .Values.ingress.enabled .Values.httpRoute.enabled }}
{{- if not $url }}
{{- fail "config.publicBaseUrl is required with ingress.enabled or httpRoute.enabled: providers and shoppers reach paygate at the URLs built from it" }}
{{- end }}
{{- if (urlParse $url).path }}
{{- fail (printf "config.publicBaseUrl %q has a path: the chart's Ingress and HTTPRoute route /callbacks, /return and /checkout at the root of the host" $url) }}
{{- end }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.parentRefs is required with httpRoute.enabled: the Gateway (and listener) that serves config.publicBaseUrl" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.enabled: there is no metrics port to scrape" }}
{{- end }}
{{- end }}

{{/*
Host of the Ingress and HTTPRoute: the host of config.publicBaseUrl.
*/}}
{{- define "paygate.publicHost" -}}
{{- (urlParse (.Values.config.publicBaseUrl | toString)).hostname }}
{{- end }}

{{/*
The HTTP paths outside callers may reach: provider callbacks, shopper returns, hosted checkout
pages. Never gRPC, metrics or the probes.
*/}}
{{- define "paygate.publicPaths" -}}
- /callbacks
- /return
- /checkout
{{- end }}

{{/*
One NetworkPolicy peer: pods of the namespaces matching namespaceSelector (and, when set, podSelector).
*/}}
{{- define "paygate.networkPeer" -}}
- namespaceSelector:
    {{- toYaml .namespaceSelector | nindent 4 }}
  {{- with .podSelector }}
  podSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
