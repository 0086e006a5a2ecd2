package io.vmgate.cli;

import io.vmgate.image.ImageDefaults;
import io.vmgate.image.ImageException;
import io.vmgate.image.ImageStore;
import io.vmgate.image.RootfsImage;
import io.vmgate.image.oci.OciImages;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.Callable;
import java.util.stream.Collectors;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code vmgate image import} and {@code vmgate image pull}: OCI images into the named store. */
final class OciCommands {
    private OciCommands() {}

    /** What limits an import or pull, shared by both. */
    static final class Limits {
        @Option(names = "--max-size", paramLabel = "SIZE", defaultValue = "8G",
                description = "Refuse an image larger than SIZE uncompressed, all layers together (default: ${DEFAULT-VALUE}).")
        String maxSize;

        @Option(names = "--max-entries", paramLabel = "N", defaultValue = "1000000",
                description = "Refuse an image with more than N tar entries, all layers together (default: ${DEFAULT-VALUE}).")
        long maxEntries;

        @Option(names = "--allow-device-nodes",
                description = "Keep device nodes the layers hold (written into the image file, never created on this host); "
                        + "without it an image with one is refused.")
        boolean allowDeviceNodes;

        OciImages.Options options() {
            long bytes = (long) VmOptions.mib(maxSize, "--max-size") << 20;
            if (bytes < 1 || maxEntries < 1) {
                throw new IllegalArgumentException("--max-size and --max-entries must be positive");
            }
            return OciImages.Options.defaults().withMaxBytes(bytes).withMaxEntries(maxEntries).withAllowDeviceNodes(allowDeviceNodes);
        }
    }

    @Command(name = "import", description = {"Import an OCI image and name it.",
            "SOURCE is oci:DIR[:TAG] (an OCI image layout), oci-archive:FILE[:TAG] (a tar of one), or",
            "docker-archive:FILE[:NAME:TAG] (what docker save and podman save write)."})
    static final class Import implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "SOURCE")
        String source;

        @Option(names = "--name", paramLabel = "NAME", required = true, description = "Image name.")
        String name;

        @Mixin
        Limits limits;

        @Override
        public Integer call() throws ImageException {
            Logging.configure(Logging.Format.text, "WARN");
            RootfsImage img = new OciImages(ImageStore.defaultRoot(), limits.options(), ImageCommand.progress(name)).importImage(source, name);
            summary(name, img);
            return 0;
        }
    }

    @Command(name = "pull", description = {"Pull an image from a registry (OCI distribution API) and name it.",
            "REF as docker reads it: ubuntu is docker.io/library/ubuntu:latest; 127.0.0.1:5000/app:v1; NAME@sha256:...",
            "Credentials: $REGISTRY_AUTH_FILE, else ~/.docker/config.json (docker login, podman login).",
            "HTTPS, except for loopback registries and --insecure-registry hosts."})
    static final class Pull implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "REF")
        String ref;

        @Option(names = "--name", paramLabel = "NAME", description = "Image name (default: the repository's last part, and -TAG unless the tag is latest).")
        String name;

        @Option(names = "--insecure-registry", paramLabel = "HOST[:PORT]", split = ",",
                description = "Speak plain HTTP to this registry (loopback registries always are); repeatable.")
        List<String> insecure = new ArrayList<>();

        @Mixin
        Limits limits;

        @Override
        public Integer call() throws ImageException {
            Logging.configure(Logging.Format.text, "WARN");
            OciImages.Options o = limits.options().withInsecureRegistries(new HashSet<>(insecure));
            String label = name != null ? name : ref;
            RootfsImage img = new OciImages(ImageStore.defaultRoot(), o, ImageCommand.progress(label)).pull(ref, Optional.ofNullable(name));
            summary(name != null ? name : io.vmgate.image.oci.ImageReference.parse(ref).defaultName(), img);
            return 0;
        }
    }

    private static void summary(String name, RootfsImage img) {
        ImageDefaults d = img.defaults();
        System.err.printf("vmgate: %s: %s, %s, %d files%s%n", name, img.shortId(), ImageCommand.mib(img.usedBytes()), img.files(),
                d.command().isEmpty() ? "" : ", runs " + command(d.command()));
        System.out.println(name);
    }

    /** An argv as a shell would show it: {@code /docker-entrypoint.sh nginx -g 'daemon off;'}. */
    static String command(List<String> argv) {
        return argv.stream().map(OciCommands::quote).collect(Collectors.joining(" "));
    }

    private static String quote(String s) {
        return !s.isEmpty() && s.matches("[A-Za-z0-9_@%+=:,./-]+") ? s : "'" + s.replace("'", "'\\''") + "'";
    }
}
