# syntax=docker/dockerfile:1
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/xygroup ./cmd/xygroup

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/xygroup /usr/local/bin/xygroup
USER nonroot:nonroot
EXPOSE 4222 8090 9090
ENTRYPOINT ["/usr/local/bin/xygroup"]
CMD ["worker"]
