{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "tunegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. Truncated to 63 characters (DNS label); if the release name
already contains the chart name it is not repeated. */}}
{{- define "tunegate.fullname" -}}
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

{{/* A name for one component: "<fullname>-<suffix>", within 63 characters, or within
`max` (Jobs need room for "-<index>" in their pods' hostnames, CronJobs for "-<timestamp>"). */}}
{{- define "tunegate.componentName" -}}
{{- $max := int (default 63 .max) }}
{{- printf "%s-%s" (include "tunegate.fullname" .root | trunc (int (sub (sub $max 1) (len .suffix))) | trimSuffix "-") .suffix }}
{{- end }}

{{- define "tunegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tunegate.labels" -}}
helm.sh/chart: {{ include "tunegate.chart" . }}
{{ include "tunegate.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tunegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tunegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels and selector labels of one component (gateway, triton, finetune). */}}
{{- define "tunegate.componentLabels" -}}
{{ include "tunegate.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tunegate.componentSelectorLabels" -}}
{{ include "tunegate.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tunegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tunegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tunegate.claimName" -}}
{{- default (include "tunegate.componentName" (dict "root" . "suffix" "models")) .Values.repository.existingClaim }}
{{- end }}

{{- define "tunegate.apiKeySecretName" -}}
{{- default (include "tunegate.componentName" (dict "root" . "suffix" "api-key")) .Values.gateway.apiKey.existingSecret }}
{{- end }}

{{- define "tunegate.apiKeyEnabled" -}}
{{- if or .Values.gateway.apiKey.existingSecret .Values.gateway.apiKey.value }}true{{ end }}
{{- end }}

{{/* image: "<repository>:<tag>", the tag defaulting to the appVersion (+ "-cuda" with GPUs). */}}
{{- define "tunegate.image" -}}
{{- $tag := .image.tag | default (printf "%s%s" .root.Chart.AppVersion (ternary "-cuda" "" (gt (int .gpu) 0))) }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}

{{/* resources with nvidia.com/gpu added to the limits (and requests) when gpu > 0. */}}
{{- define "tunegate.resources" -}}
{{- $res := deepCopy (.resources | default dict) }}
{{- if gt (int .gpu) 0 }}
{{- $limits := get $res "limits" | default dict }}
{{- $_ := set $limits "nvidia.com/gpu" (int .gpu) }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{- define "tunegate.tritonServiceName" -}}
{{- include "tunegate.componentName" (dict "root" . "suffix" "triton") }}
{{- end }}

{{/* The headless Service the fine-tune ranks are a subdomain of: rank 0 of job J is
reachable as J-0.<this name>. */}}
{{/* The Lease the gateway replicas elect the loop's leader with (gateway/loop/leadership.py). */}}
{{- define "tunegate.leaseName" -}}
{{- include "tunegate.componentName" (dict "root" . "suffix" "loop") }}
{{- end }}

{{- define "tunegate.finetuneServiceName" -}}
{{- include "tunegate.componentName" (dict "root" . "suffix" "finetune") }}
{{- end }}

{{/* The repository volume, the same claim in every pod. */}}
{{- define "tunegate.repositoryVolume" -}}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "tunegate.claimName" . }}
{{- end }}

{{/* `tunegate finetune` job flags for a chart-started run (run/schedule). */}}
{{- define "tunegate.finetune.jobArgs" -}}
{{- $args := list "--repo" .Values.repository.mountPath "--model" (required "finetune.model is required to run a fine-tune from the chart" .Values.finetune.model) "--data" }}
{{- $args = concat $args .Values.finetune.data .Values.finetune.args }}
{{- /* Rank 0 writes the outcome beside the model, on the shared volume, for whoever watches. */}}
{{- $args = concat $args (list "--result-file" (printf "%s/%s/.finetune/$(JOB_NAME).json" .Values.repository.mountPath .Values.finetune.model)) }}
{{- toJson $args }}
{{- end }}

{{/* The spec of an Indexed fine-tune Job: one pod per rank; rank 0 runs Horovod's Gloo
rendezvous server and every rank reaches it as <job>-0.<headless service>, so no ssh and
no horovodrun are involved (how Horovod's Ray and Spark integrations start ranks).
Arguments: root, args (a list of job flags). */}}
{{- define "tunegate.finetune.jobSpec" -}}
{{- $root := .root }}
{{- $v := $root.Values.finetune }}
completionMode: Indexed
completions: {{ $v.workers }}
parallelism: {{ $v.workers }}
# A rank that dies takes the Gloo ring with it: the job fails as a whole and is resubmitted
# (with --resume it continues from the last epoch checkpoint).
backoffLimit: 0
# Exit 2 (bad input) and 3 (not promoted) are answers, not faults: never retry them.
podFailurePolicy:
  rules:
    - action: FailJob
      onExitCodes:
        containerName: trainer
        operator: In
        values: [2, 3]
      # Required by the 1.28 API schema even beside onExitCodes; empty means unused.
      onPodConditions: []
activeDeadlineSeconds: {{ $v.activeDeadlineSeconds }}
ttlSecondsAfterFinished: {{ $v.ttlSecondsAfterFinished }}
template:
  metadata:
    labels:
      {{- include "tunegate.componentSelectorLabels" (dict "root" $root "component" "finetune") | nindent 6 }}
    {{- with $v.podAnnotations }}
    annotations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  spec:
    restartPolicy: Never
    # The pods' hostnames (<job>-<index>) resolve under this headless Service.
    subdomain: {{ include "tunegate.finetuneServiceName" $root }}
    serviceAccountName: {{ include "tunegate.serviceAccountName" $root }}
    automountServiceAccountToken: false
    {{- with $root.Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml $root.Values.podSecurityContext | nindent 6 }}
    containers:
      - name: trainer
        image: {{ include "tunegate.image" (dict "root" $root "image" $v.image "gpu" $v.gpu) | quote }}
        imagePullPolicy: {{ $v.image.pullPolicy }}
        command: [python, -m, trainer.cluster]
        args: {{ .args }}
        env:
          - name: JOB_NAME
            valueFrom:
              fieldRef:
                fieldPath: metadata.labels['batch.kubernetes.io/job-name']
          - name: TUNEGATE_WORLD_SIZE
            value: {{ $v.workers | quote }}
          - name: TUNEGATE_RENDEZVOUS_HOST
            value: "$(JOB_NAME)-0.{{ include "tunegate.finetuneServiceName" $root }}"
          - name: TUNEGATE_RENDEZVOUS_PORT
            value: {{ $v.rendezvousPort | quote }}
          - name: HOROVOD_GLOO_IFACE
            value: {{ $v.glooIface | quote }}
          - name: HOROVOD_GLOO_TIMEOUT_SECONDS
            value: {{ $v.glooTimeoutSeconds | quote }}
          - name: HOME
            value: /tmp
          - name: MPLCONFIGDIR
            value: /tmp/matplotlib
          - name: TF_CPP_MIN_LOG_LEVEL
            value: "2"
          {{- with $v.env }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        ports:
          - name: rendezvous
            containerPort: {{ $v.rendezvousPort }}
        resources:
          {{- include "tunegate.resources" (dict "resources" $v.resources "gpu" $v.gpu) | nindent 10 }}
        securityContext:
          {{- toYaml $root.Values.securityContext | nindent 10 }}
        volumeMounts:
          - name: models
            mountPath: {{ $root.Values.repository.mountPath }}
          - name: tmp
            mountPath: /tmp
    volumes:
      {{- include "tunegate.repositoryVolume" $root | nindent 6 }}
      - name: tmp
        emptyDir: {}
    {{- with $v.nodeSelector }}
    nodeSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $v.tolerations }}
    tolerations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $v.affinity }}
    affinity:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}

{{/* "true" when the gateway serves gRPC (gateway.service.grpcPort > 0), else empty. */}}
{{- define "tunegate.grpcEnabled" -}}
{{- if gt (int .Values.gateway.service.grpcPort) 0 }}true{{ end }}
{{- end }}

{{/* The gateway container's gRPC port (Triton's default), empty when gRPC is off. */}}
{{- define "tunegate.grpcContainerPort" -}}
{{- if include "tunegate.grpcEnabled" . }}8001{{ end }}
{{- end }}

{{/* The gateway's readiness probe: gateway.readinessProbe (HTTP), or with
gateway.grpcReadinessProbe.enabled Kubernetes' grpc probe against grpc.health.v1. That probe
takes a port number only (no named port) and exists from Kubernetes 1.27. */}}
{{- define "tunegate.gateway.readinessProbe" -}}
{{- $g := .Values.gateway }}
{{- $p := $g.grpcReadinessProbe }}
{{- if $p.enabled }}
{{- if not (include "tunegate.grpcEnabled" .) }}
{{- fail "gateway.grpcReadinessProbe.enabled needs gRPC on: gateway.service.grpcPort > 0" }}
{{- end }}
{{- if not (semverCompare ">=1.27.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "gateway.grpcReadinessProbe needs Kubernetes 1.27 or newer (grpc probes); this cluster is %s" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- $probe := omit $p "enabled" "service" }}
{{- $_ := set $probe "grpc" (dict "port" (int (include "tunegate.grpcContainerPort" .)) "service" $p.service) }}
{{- toYaml $probe }}
{{- else }}
{{- toYaml $g.readinessProbe }}
{{- end }}
{{- end }}
