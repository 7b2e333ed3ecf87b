# syntax=docker/dockerfile:1
# A static xygroup binary on a distroless, non-root base image.
# Exact versions: golang matches go.mod's toolchain. distroless publishes no version
# tags, only digests; none could be resolved when this was written: pin
# gcr.io/distroless/static-debian12@sha256:... once you have pulled and checked it.
FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/xygroup ./cmd/xygroup

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/xygroup /usr/local/bin/xygroup
USER 65532:65532
EXPOSE 9090
# The worker's /healthz; the sandbox's service overrides it in docker-compose.yml.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["/usr/local/bin/xygroup", "health"]
ENTRYPOINT ["/usr/local/bin/xygroup"]
CMD ["worker"]
