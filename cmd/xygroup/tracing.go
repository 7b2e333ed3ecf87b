package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// tracingFromEnv builds the tracer provider that the standard OTEL_*
// variables ask for, or returns nil when they ask for none: tracing is on
// when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER=otlp, and
// OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true turn it off. The
// exporter reads the rest of OTEL_EXPORTER_OTLP_* itself (headers,
// compression, timeout, TLS), the provider OTEL_TRACES_SAMPLER* and
// OTEL_BSP_*, the resource OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
// Shut the provider down to flush what is still batched.
func tracingFromEnv(ctx context.Context, log zerolog.Logger) (*sdktrace.TracerProvider, error) {
	if off, _ := strconv.ParseBool(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED"))); off {
		return nil, nil
	}
	asked := false
	if exporters := os.Getenv("OTEL_TRACES_EXPORTER"); exporters != "" {
		for _, e := range strings.Split(exporters, ",") {
			switch strings.ToLower(strings.TrimSpace(e)) {
			case "none":
				return nil, nil
			case "otlp":
				asked = true
			case "":
			default:
				return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: the worker exports traces with otlp only (or none)", exporters)
			}
		}
	}
	if !asked && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, nil
	}
	protocol := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp sdktrace.SpanExporter
	var err error
	switch strings.TrimSpace(protocol) {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTLP protocol %q: use http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	// The variables win over these defaults.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "xygroup"), attribute.String("service.version", version)),
		resource.WithTelemetrySDK(), resource.WithHost(), resource.WithFromEnv())
	if err != nil {
		log.Warn().Err(err).Msg("tracing: resource attributes incomplete")
	}
	// Export failures go to the worker's log as JSON lines, not to stderr as text.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn().Err(err).Msg("tracing") }))
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}
