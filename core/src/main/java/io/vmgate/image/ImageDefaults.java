package io.vmgate.image;

import java.io.IOException;
import java.io.Reader;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;

/**
 * How an image wants its processes run, as an OCI image's config says it ({@code Env},
 * {@code WorkingDir}, {@code User}, {@code Entrypoint}, {@code Cmd}), kept with the image in the
 * store. Every session of the image gets the environment and the working directory; the user is
 * the guest user unless the operator names another; the command is what {@code vmgate run} runs
 * when given none. Images from a directory or Debian have none ({@link #NONE}).
 *
 * @param env        {@code NAME=VALUE} strings, in the config's order
 * @param workdir    an absolute guest path, or empty
 * @param user       {@code NAME}, {@code UID}, {@code NAME:GROUP} or {@code UID:GID}, or empty
 * @param entrypoint the program and its first arguments, or empty
 * @param cmd        the default arguments (or the whole command, without an entrypoint)
 */
public record ImageDefaults(List<String> env, Optional<String> workdir, Optional<String> user, List<String> entrypoint,
        List<String> cmd) {
    public static final ImageDefaults NONE = new ImageDefaults(List.of(), Optional.empty(), Optional.empty(), List.of(), List.of());
    public static final String FILE = "defaults.properties";

    public ImageDefaults {
        env = List.copyOf(env);
        entrypoint = List.copyOf(entrypoint);
        cmd = List.copyOf(cmd);
        workdir = workdir.filter(w -> !w.isEmpty());
        user = user.filter(u -> !u.isEmpty());
    }

    /** What runs when no command is given: the entrypoint followed by the default arguments (empty: none). */
    public List<String> command() {
        List<String> c = new ArrayList<>(entrypoint);
        c.addAll(cmd);
        return List.copyOf(c);
    }

    /** The environment as a map, later entries winning; entries without '=' or with an empty name are dropped. */
    public Map<String, String> environment() {
        Map<String, String> m = new LinkedHashMap<>();
        for (String kv : env) {
            int eq = kv.indexOf('=');
            if (eq > 0) {
                m.remove(kv.substring(0, eq)); // a repeated name moves to its last place
                m.put(kv.substring(0, eq), kv.substring(eq + 1));
            }
        }
        return m;
    }

    public boolean isEmpty() {
        return equals(NONE);
    }

    /** Writes {@link #FILE} into an image directory (nothing for {@link #NONE}). */
    void write(Path dir) throws IOException {
        if (isEmpty()) {
            return;
        }
        Properties p = new Properties();
        list(p, "env", env);
        list(p, "entrypoint", entrypoint);
        list(p, "cmd", cmd);
        workdir.ifPresent(w -> p.setProperty("workdir", w));
        user.ifPresent(u -> p.setProperty("user", u));
        try (Writer w = Files.newBufferedWriter(dir.resolve(FILE), StandardCharsets.UTF_8)) {
            p.store(w, "how the image wants its processes run (from its OCI config)");
        }
    }

    /** Reads {@link #FILE} from an image directory; {@link #NONE} when it has none. */
    static ImageDefaults read(Path dir) throws ImageException {
        Properties p = new Properties();
        try (Reader r = Files.newBufferedReader(dir.resolve(FILE), StandardCharsets.UTF_8)) {
            p.load(r);
        } catch (NoSuchFileException e) {
            return NONE;
        } catch (IOException | IllegalArgumentException e) {
            throw new ImageException("cannot read " + dir.resolve(FILE) + ": " + e.getMessage(), e);
        }
        return new ImageDefaults(list(p, "env"), Optional.ofNullable(p.getProperty("workdir")), Optional.ofNullable(p.getProperty("user")),
                list(p, "entrypoint"), list(p, "cmd"));
    }

    private static void list(Properties p, String key, List<String> values) {
        p.setProperty(key + ".count", Integer.toString(values.size()));
        for (int i = 0; i < values.size(); i++) {
            p.setProperty(key + "." + i, values.get(i));
        }
    }

    private static List<String> list(Properties p, String key) throws ImageException {
        List<String> out = new ArrayList<>();
        int n;
        try {
            n = Integer.parseInt(p.getProperty(key + ".count", "0"));
        } catch (NumberFormatException e) {
            throw new ImageException(FILE + ": " + key + ".count is not a number");
        }
        for (int i = 0; i < n; i++) {
            String v = p.getProperty(key + "." + i);
            if (v == null) {
                throw new ImageException(FILE + ": " + key + "." + i + " is missing");
            }
            out.add(v);
        }
        return out;
    }
}
