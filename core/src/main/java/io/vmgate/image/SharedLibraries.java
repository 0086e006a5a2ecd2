package io.vmgate.image;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Finds the shared libraries and the dynamic loader a host binary needs, by asking the host's
 * own loader ({@code ldd}), so the image gets exactly what ld.so would load — transitively,
 * with multiarch paths resolved the Debian way.
 */
final class SharedLibraries {
    private static final Pattern ARROW = Pattern.compile("^(\\S+) => (\\S+) \\(0x[0-9a-fA-F]+\\)$");
    private static final Pattern BARE = Pattern.compile("^(/\\S+) \\(0x[0-9a-fA-F]+\\)$");

    private SharedLibraries() {}

    /** Paths as the loader names them (e.g. {@code /lib64/ld-linux-x86-64.so.2}); the image uses the same paths. */
    static List<Path> of(Path binary) throws ImageException {
        ProcessBuilder pb = new ProcessBuilder("ldd", binary.toString()).redirectErrorStream(true);
        pb.environment().keySet().removeIf(k -> k.startsWith("LD_"));
        String out;
        int rc;
        try {
            Process p = pb.start();
            out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            if (!p.waitFor(30, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                throw new ImageException("ldd " + binary + " did not finish");
            }
            rc = p.exitValue();
        } catch (IOException e) {
            throw new ImageException("cannot run ldd to find the libraries of " + binary
                    + ": install it with `apt-get install libc-bin` (" + e.getMessage() + ")", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ImageException("interrupted running ldd " + binary, e);
        }
        if (out.contains("not a dynamic executable") || out.contains("statically linked")) {
            return List.of();
        }
        if (rc != 0) {
            throw new ImageException("ldd " + binary + " failed (exit " + rc + "): " + out.strip());
        }
        return parse(out, binary);
    }

    static List<Path> parse(String lddOutput, Path binary) throws ImageException {
        List<Path> libs = new ArrayList<>();
        for (String raw : lddOutput.split("\n")) {
            String line = raw.strip();
            if (line.isEmpty()) {
                continue;
            }
            if (line.endsWith("=> not found")) {
                throw new ImageException(binary + " needs " + line.substring(0, line.indexOf(' '))
                        + ", which is not installed on this host");
            }
            Matcher m = ARROW.matcher(line);
            if (m.matches()) {
                libs.add(Path.of(m.group(2)));
                continue;
            }
            m = BARE.matcher(line);
            if (m.matches()) {
                libs.add(Path.of(m.group(1)));
            }
            // anything else (linux-vdso.so.1, which the kernel provides) has no file to copy
        }
        return List.copyOf(libs);
    }
}
