# scopegate: the gateway as a sidecar image. Multi-stage: build with dev dependencies, run with
# production dependencies only, as a non-root user. (No Docker engine runs on the development
# machine: this file is kept simple and is not built in CI.)

FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM node:20-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# The demo's authorization and SCIM servers are optional dependencies: not in the image.
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
# The image's `node` user, by number: Kubernetes' runAsNonRoot can verify only a numeric user.
USER 1000:1000
# 8080: the proxy port SCIM clients call; 9090: admin (/healthz, /readyz, /metrics), keep it internal.
# Both bind every address in the container (a Service and the kubelet's probes reach the pod's IP).
# These variables beat the config file: set them in the pod spec to bind elsewhere.
ENV SCOPEGATE_LISTEN_HOST=0.0.0.0 SCOPEGATE_ADMIN_HOST=0.0.0.0
EXPOSE 8080 9090
# The admin port of SCOPEGATE_ADMIN_PORT when it is set (a port set in the config file instead
# is not seen here: set the variable too).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.SCOPEGATE_ADMIN_PORT || 9090}/healthz`).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# No --config here: the config is $SCOPEGATE_CONFIG, else config/scopegate.yaml (INTERFACE.md); an
# argument would beat the variable. `docker run scopegate --config /etc/scopegate/scopegate.yaml` names another.
# --no-memory-reducer: what the binary's interpreter line gives (src/cli.ts, README Performance).
ENTRYPOINT ["node", "--no-memory-reducer", "dist/cli.js", "serve"]
