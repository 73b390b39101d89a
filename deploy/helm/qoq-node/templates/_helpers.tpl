{{/* Chart name, release-scoped full name and labels. */}}
{{- define "qoq-node.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "qoq-node.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "qoq-node.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "qoq-node.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "qoq-node.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qoq-node.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "qoq-node.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "qoq-node.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "qoq-node.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "qoq-node.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The node's image: the slim one (the base install, no torch) when the engine runs on its own pods. */}}
{{- define "qoq-node.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.engineServer.enabled -}}
{{- $tag = .Values.image.slimTag | default (printf "%s-slim" $tag) -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* Mount points inside the pod. */}}
{{- define "qoq-node.dataDir" -}}/var/lib/qoq-node{{- end -}}
{{- define "qoq-node.tlsDir" -}}/etc/qoq-node/tls{{- end -}}
{{- define "qoq-node.stowTlsDir" -}}/etc/qoq-node/stow-tls{{- end -}}

{{/* A node.yaml tls section (JSON) for a kubernetes.io/tls Secret mounted at .dir; its ca.crt when .verify. */}}
{{- define "qoq-node.tlsSection" -}}
{{- $tls := dict "enabled" true "certificate" (printf "%s/tls.crt" .dir) "private_key" (printf "%s/tls.key" .dir) -}}
{{- if .verify -}}
{{- $_ := set $tls "ca" (printf "%s/ca.crt" .dir) -}}
{{- end -}}
{{- toJson $tls -}}
{{- end -}}

{{/* The STOW-RS receiver's own port (config.dicomweb.stow.port), or "" when it is on the metrics port. */}}
{{- define "qoq-node.stowPort" -}}
{{- with (dig "dicomweb" "stow" "port" nil .Values.config) -}}{{- int . -}}{{- end -}}
{{- end -}}

{{/* The named container port STOW-RS is served on. */}}
{{- define "qoq-node.stowPortName" -}}
{{- if include "qoq-node.stowPort" . -}}stow{{- else -}}metrics{{- end -}}
{{- end -}}

{{/* Where the checkpoint is in the pods that mount the model volume. */}}
{{- define "qoq-node.modelPath" -}}
{{- trimSuffix "/" (printf "/models/%s" .Values.model.subPath) -}}
{{- end -}}

{{/* The model name trtllm-serve answers to: engineServer.servedModel, else the checkpoint directory's
name (what trtllm-serve lists for a local checkpoint when it is given no name). */}}
{{- define "qoq-node.servedModel" -}}
{{- .Values.engineServer.servedModel | default (base (include "qoq-node.modelPath" .)) -}}
{{- end -}}

{{- define "qoq-node.hasModel" -}}
{{- if or .Values.model.existingClaim .Values.model.hostPath -}}true{{- end -}}
{{- end -}}

{{/* The node's node.yaml: values.config with the keys the chart manages laid over it. */}}
{{- define "qoq-node.config" -}}
{{- $tls := dict "enabled" false -}}
{{- if .Values.dicom.tls.enabled -}}
{{- $tls = include "qoq-node.tlsSection" (dict "dir" (include "qoq-node.tlsDir" .) "verify" .Values.dicom.tls.verifyClients) | fromJson -}}
{{- end -}}
{{- $managed := dict
  "dicom" (dict "host" "0.0.0.0" "port" .Values.dicom.port "tls" $tls)
  "storage" (dict "root" (include "qoq-node.dataDir" .))
  "http" (dict "host" "0.0.0.0" "port" .Values.metrics.port)
  "hl7_listener" (dict "enabled" .Values.hl7.enabled "host" "0.0.0.0" "port" .Values.hl7.port)
-}}
{{- /* The model volume is read-only: what engines build from it goes on the data volume. */ -}}
{{- $_ := set $managed "engine" (dict "cache_dir" (printf "%s/engine-cache" (include "qoq-node.dataDir" .))) -}}
{{- if include "qoq-node.hasModel" . -}}
{{- $_ := set (get $managed "engine") "model" (include "qoq-node.modelPath" .) -}}
{{- end -}}
{{- if .Values.feedbackTokens.secretName -}}
{{- $_ := set $managed "feedback" (dict "tokens_file" "/etc/qoq-node/feedback-tokens") -}}
{{- end -}}
{{- $stow := dict -}}
{{- if and .Values.stowTokens.secretName (not (dig "dicomweb" "stow" "tokens_file" "" .Values.config)) -}}
{{- $_ := set $stow "tokens_file" "/etc/qoq-node/stow-tokens" -}}
{{- end -}}
{{- if include "qoq-node.stowPort" . -}}
{{- $stowTls := dict "enabled" false -}}
{{- if .Values.stowTls.enabled -}}
{{- $stowTls = include "qoq-node.tlsSection" (dict "dir" (include "qoq-node.stowTlsDir" .) "verify" .Values.stowTls.verifyClients) | fromJson -}}
{{- end -}}
{{- $stow = mustMergeOverwrite $stow (dict "host" "0.0.0.0" "tls" $stowTls) -}}
{{- end -}}
{{- if $stow -}}
{{- $_ := set $managed "dicomweb" (dict "stow" $stow) -}}
{{- end -}}
{{- if .Values.engineServer.enabled -}}
{{- $openai := dict "url" (printf "http://%s:%d/v1" (include "qoq-node.engineName" .) (int .Values.engineServer.port)) "served_model" (include "qoq-node.servedModel" .) -}}
{{- $engine := dict "backend" "openai" "openai" $openai -}}
{{- $_ := set $managed "engine" (mustMergeOverwrite (get $managed "engine") $engine) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite (deepCopy .Values.config) $managed) -}}
{{- end -}}

{{/* Every destination port, for the egress NetworkPolicy. */}}
{{- define "qoq-node.destinationPorts" -}}
{{- $ports := list -}}
{{- range .Values.config.destinations.dicom -}}{{- $ports = append $ports (int .port) -}}{{- end -}}
{{- range .Values.config.destinations.hl7 -}}{{- $ports = append $ports (int .port) -}}{{- end -}}
{{- range .Values.config.destinations.dicomweb -}}
{{- $ports = append $ports (include "qoq-node.urlPort" .url | int) -}}
{{- with .auth }}{{ with .token_url }}{{ $ports = append $ports (include "qoq-node.urlPort" . | int) }}{{ end }}{{ end -}}
{{- end -}}
{{- toJson (uniq $ports) -}}
{{- end -}}

{{/* The port an http(s) URL reaches: its own, else the scheme's (a DICOMweb archive, its token endpoint). */}}
{{- define "qoq-node.urlPort" -}}
{{- $url := urlParse . -}}
{{- $host := splitList ":" $url.host -}}
{{- if gt (len $host) 1 }}{{ last $host }}{{ else if eq $url.scheme "https" }}443{{ else }}80{{ end -}}
{{- end -}}

{{/* The engine server's name and labels (scale-out). */}}
{{- define "qoq-node.engineName" -}}
{{- printf "%s-engine" (include "qoq-node.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "qoq-node.engineSelectorLabels" -}}
app.kubernetes.io/name: {{ include "qoq-node.name" . }}-engine
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
