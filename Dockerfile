# One image for every ambit component (control plane, ztunnel, CNI node agent, waypoint, CLI);
# the manifests pick the entry point with `command`.
#   docker build -t ambit:0.1.0 .

FROM node:20-bookworm-slim AS build
# node-gyp needs a compiler and python for the native socket addon (shared/native)
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json binding.gyp ./
COPY shared/native/ambit_net.c shared/native/
# dependencies first (cached while only sources change); scripts run below, one at a time
RUN npm ci --ignore-scripts --no-audit --no-fund
# the native addon (package.json "install": node-gyp rebuild)
RUN npm run install
COPY tsconfig.json ./
COPY shared shared
COPY control control
COPY ztunnel ztunnel
COPY waypoint waypoint
COPY cni cni
COPY cli cli
COPY tests tests
COPY bench bench
RUN npx tsc -p tsconfig.json \
 && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
# ip/iptables/nft: the node agent writes redirect rules inside pod network namespaces
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 iptables nftables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/build/Release/ambit_net.node ./build/Release/ambit_net.node
COPY --from=build /app/dist ./dist
# every component is started by its manifest (`node dist/<component>/main.js`); by default, the CLI
CMD ["node", "dist/cli/main.js", "--help"]
