package io.vmgate.image.oci;

/**
 * The platform an image (or an index entry) is built for: {@code linux/amd64} is what vmgate's
 * guests run.
 *
 * @param variant e.g. {@code v8} for arm64, empty when none is given
 */
public record Platform(String os, String architecture, String variant) {
    public static final Platform LINUX_AMD64 = new Platform("linux", "amd64", "");

    public Platform {
        variant = variant == null ? "" : variant;
    }

    /** Whether vmgate's x86-64 Linux guests can run it (any amd64 variant: v1 is what every x86-64 runs, v2+ too on today's hosts). */
    public boolean runsHere() {
        return os.equals("linux") && architecture.equals("amd64");
    }

    @Override
    public String toString() {
        return os + "/" + architecture + (variant.isEmpty() ? "" : "/" + variant);
    }
}
