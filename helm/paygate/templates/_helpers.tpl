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
The TOML configuration file. Strings go through toJson: a JSON string is a valid TOML basic string.
Keys the chart fixes (see values.yaml) are not taken from values.
*/}}
{{- define "paygate.configToml" -}}
{{- $c := .Values.config -}}
# paygate configuration, rendered by the paygate Helm chart (values.yaml `config`).
# Env vars PAYGATE_<SECTION>__<KEY> override it; `paygate check-config` shows the effective result.

[server]
grpc_addr = {{ printf "0.0.0.0:%d" (int .Values.ports.grpc) | toJson }}
http_addr = {{ printf "0.0.0.0:%d" (int .Values.ports.http) | toJson }}
public_base_url = {{ $c.publicBaseUrl | toString | toJson }}
shutdown_grace_secs = {{ int $c.shutdownGraceSecs }}

[database]
# url: read from the Secret {{ .Values.database.existingSecret }} via PAYGATE_DATABASE__URL_FILE.
max_connections = {{ int $c.database.maxConnections }}
# The database is provisioned by the operators; paygate only applies its migrations.
create_if_missing = false

[telemetry]
log_filter = {{ $c.telemetry.logFilter | toString | toJson }}
log_format = {{ $c.telemetry.logFormat | toString | toJson }}
otlp_endpoint = {{ $c.telemetry.otlpEndpoint | toString | toJson }}

# The sandbox provider's hosted page lets anyone mark a payment paid: never enabled in a cluster.
[providers.sandbox]
enabled = false
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
{{- $preStop := 0 }}
{{- with .Values.lifecycle }}{{ with .preStop }}{{ with .sleep }}{{ $preStop = int .seconds }}{{ end }}{{ end }}{{ end }}
{{- $needed := add $preStop (int .Values.config.shutdownGraceSecs) }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed the preStop sleep plus config.shutdownGraceSecs (%d)" (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- end }}
