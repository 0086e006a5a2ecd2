/**
 * Prometheus metrics and health endpoints for {@code vmgate serve}: the library's observer
 * interfaces implemented with the Prometheus Java client, served over HTTP.
 */
package io.vmgate.metrics;
