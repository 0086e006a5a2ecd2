package io.vmgate.image;

import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Runs one image build in its own JVM, so that a test can run it as another user
 * ({@code setpriv --reuid=nobody}): {@code NonRootBuild tar|dir INPUT WORKDIR}. Prints
 * {@code OK <disk>} or {@code ERROR <message>}; exits 0 or 1.
 */
public final class NonRootBuild {
    public static void main(String[] args) throws Exception {
        Path input = Path.of(args[1]), work = Path.of(args[2]);
        RootfsBuilder b = new RootfsBuilder(line -> { });
        try {
            RootfsBuilder.Built built;
            if (args[0].equals("tar")) {
                built = b.fromEntries(sink -> {
                    try (InputStream in = Files.newInputStream(input)) {
                        sink.addTar(in);
                    }
                }, work);
            } else {
                built = b.fromDirectory(RootfsBuilder.scan(input), work);
            }
            System.out.println("OK " + built.disk() + " uid=" + RootfsBuilder.uidOf());
        } catch (ImageException e) {
            System.out.println("ERROR " + e.getMessage().replace('\n', ' '));
            System.exit(1);
        }
    }
}
