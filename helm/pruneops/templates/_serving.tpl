{{/* The serving pod's two containers: the model server and the sidecar in front of it.
Pass (dict "ctx" $ "kserve" false). For KServe the sidecar comes first, named
kserve-container: KServe routes inference traffic to that container's port, and the sidecar
measures and forwards every request to the server on loopback. */}}
{{- define "pruneops.servingContainers" -}}
{{- $ctx := .ctx }}
{{- $gpu := $ctx.Values.serving.gpu.enabled }}
{{- if .kserve }}
- name: {{ ternary "kserve-container" "sidecar" .kserve }}
  image: {{ include "pruneops.image" (dict "ctx" $ctx) }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  args:
    - sidecar
    - --host=0.0.0.0
    - --upstream=http://127.0.0.1:{{ $ctx.Values.serving.server.port }}
    - --port={{ $ctx.Values.serving.sidecar.port }}
    - --max-in-flight={{ $ctx.Values.serving.sidecar.maxInFlight }}
    - --timeout={{ $ctx.Values.serving.sidecar.timeout }}
    - --sample-every={{ $ctx.Values.serving.sidecar.sampleEvery }}
    {{- if $ctx.Values.driftService.enabled }}
    - --drift-service=http://{{ include "pruneops.fullname" $ctx }}-drift:{{ $ctx.Values.driftService.port }}
    {{- else }}
    - --drift-interval={{ $ctx.Values.serving.sidecar.driftInterval }}
    - --drift-rows={{ $ctx.Values.serving.sidecar.driftRows }}
    {{- end }}
  {{- with $ctx.Values.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    {{- include "pruneops.commonEnv" $ctx | nindent 4 }}
    {{- if $ctx.Values.driftService.enabled }}
    - name: PRUNEOPS_DRIFT_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $ctx.Values.secrets.drift.existingSecret }}
          key: {{ $ctx.Values.secrets.drift.key }}
    {{- end }}
    {{- with $ctx.Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: http
      containerPort: {{ $ctx.Values.serving.sidecar.port }}
      protocol: TCP
  readinessProbe:
    httpGet: {path: /v2/health/ready, port: http}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /metrics, port: http}
    periodSeconds: 10
  resources:
    {{- toYaml $ctx.Values.serving.sidecar.resources | nindent 4 }}
  securityContext:
    {{- include "pruneops.containerSecurityContext" $ctx | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
- name: server
  image: {{ include "pruneops.image" (dict "ctx" $ctx "gpu" $gpu) }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  args:
    - serve
    - --host=0.0.0.0
    - --model={{ $ctx.Values.serving.model }}
    - --alias={{ $ctx.Values.serving.alias }}
    - --port={{ $ctx.Values.serving.server.port }}
    - --poll-interval={{ $ctx.Values.serving.pollInterval }}
    - --device={{ ternary "cuda" "cpu" $gpu }}
    {{- if $ctx.Values.serving.shadow }}
    - --shadow
    {{- else }}
    - --canary={{ $ctx.Values.serving.canary }}
    {{- end }}
  {{- with $ctx.Values.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    {{- include "pruneops.commonEnv" $ctx | nindent 4 }}
    {{- with $ctx.Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    - name: PRUNEOPS_ORT_THREADS
      value: {{ $ctx.Values.serving.server.ortThreads | quote }}
    - name: PRUNEOPS_WEBHOOK_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ $ctx.Values.secrets.webhook.existingSecret }}
          key: {{ $ctx.Values.secrets.webhook.key }}
  ports:
    - name: server
      containerPort: {{ $ctx.Values.serving.server.port }}
      protocol: TCP
  startupProbe:
    httpGet: {path: /v2/health/ready, port: server}
    periodSeconds: 5
    failureThreshold: 60
  readinessProbe:
    httpGet: {path: /v2/health/ready, port: server}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /v2/health/live, port: server}
    periodSeconds: 10
  resources:
    {{- $resources := deepCopy $ctx.Values.serving.server.resources }}
    {{- if $gpu }}
    {{- $_ := set $resources "limits" (merge (dict $ctx.Values.serving.gpu.resourceName (toString $ctx.Values.serving.gpu.count)) (default dict $resources.limits)) }}
    {{- end }}
    {{- toYaml $resources | nindent 4 }}
  securityContext:
    {{- include "pruneops.containerSecurityContext" $ctx | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
{{- else }}
- name: server
  image: {{ include "pruneops.image" (dict "ctx" $ctx "gpu" $gpu) }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  args:
    - serve
    - --host=0.0.0.0
    - --model={{ $ctx.Values.serving.model }}
    - --alias={{ $ctx.Values.serving.alias }}
    - --port={{ $ctx.Values.serving.server.port }}
    - --poll-interval={{ $ctx.Values.serving.pollInterval }}
    - --device={{ ternary "cuda" "cpu" $gpu }}
    {{- if $ctx.Values.serving.shadow }}
    - --shadow
    {{- else }}
    - --canary={{ $ctx.Values.serving.canary }}
    {{- end }}
  {{- with $ctx.Values.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    {{- include "pruneops.commonEnv" $ctx | nindent 4 }}
    {{- with $ctx.Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    - name: PRUNEOPS_ORT_THREADS
      value: {{ $ctx.Values.serving.server.ortThreads | quote }}
    - name: PRUNEOPS_WEBHOOK_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ $ctx.Values.secrets.webhook.existingSecret }}
          key: {{ $ctx.Values.secrets.webhook.key }}
  ports:
    - name: server
      containerPort: {{ $ctx.Values.serving.server.port }}
      protocol: TCP
  startupProbe:
    httpGet: {path: /v2/health/ready, port: server}
    periodSeconds: 5
    failureThreshold: 60
  readinessProbe:
    httpGet: {path: /v2/health/ready, port: server}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /v2/health/live, port: server}
    periodSeconds: 10
  resources:
    {{- $resources := deepCopy $ctx.Values.serving.server.resources }}
    {{- if $gpu }}
    {{- $_ := set $resources "limits" (merge (dict $ctx.Values.serving.gpu.resourceName (toString $ctx.Values.serving.gpu.count)) (default dict $resources.limits)) }}
    {{- end }}
    {{- toYaml $resources | nindent 4 }}
  securityContext:
    {{- include "pruneops.containerSecurityContext" $ctx | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
- name: {{ ternary "kserve-container" "sidecar" .kserve }}
  image: {{ include "pruneops.image" (dict "ctx" $ctx) }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  args:
    - sidecar
    - --host=0.0.0.0
    - --upstream=http://127.0.0.1:{{ $ctx.Values.serving.server.port }}
    - --port={{ $ctx.Values.serving.sidecar.port }}
    - --max-in-flight={{ $ctx.Values.serving.sidecar.maxInFlight }}
    - --timeout={{ $ctx.Values.serving.sidecar.timeout }}
    - --sample-every={{ $ctx.Values.serving.sidecar.sampleEvery }}
    {{- if $ctx.Values.driftService.enabled }}
    - --drift-service=http://{{ include "pruneops.fullname" $ctx }}-drift:{{ $ctx.Values.driftService.port }}
    {{- else }}
    - --drift-interval={{ $ctx.Values.serving.sidecar.driftInterval }}
    - --drift-rows={{ $ctx.Values.serving.sidecar.driftRows }}
    {{- end }}
  {{- with $ctx.Values.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    {{- include "pruneops.commonEnv" $ctx | nindent 4 }}
    {{- if $ctx.Values.driftService.enabled }}
    - name: PRUNEOPS_DRIFT_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ $ctx.Values.secrets.drift.existingSecret }}
          key: {{ $ctx.Values.secrets.drift.key }}
    {{- end }}
    {{- with $ctx.Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: http
      containerPort: {{ $ctx.Values.serving.sidecar.port }}
      protocol: TCP
  readinessProbe:
    httpGet: {path: /v2/health/ready, port: http}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /metrics, port: http}
    periodSeconds: 10
  resources:
    {{- toYaml $ctx.Values.serving.sidecar.resources | nindent 4 }}
  securityContext:
    {{- include "pruneops.containerSecurityContext" $ctx | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
{{- end }}
{{- end }}
