/**
 * OCI images as root filesystem images: references and registries (the distribution API v2 over
 * the JDK's HTTP client, bearer-token auth, credentials), image layouts and archives
 * ({@code oci:}, {@code oci-archive:}, {@code docker-archive:}), a content-addressed blob store
 * that verifies every blob, and the layer applier (gzip, zstd, whiteouts) that feeds the
 * {@link io.vmgate.image.RootfsStore}'s build. Nothing from a registry or an archive is trusted.
 */
package io.vmgate.image.oci;
