package io.vmgate.image.oci;

import io.vmgate.text.Json;
import io.vmgate.image.ImageDefaults;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The parts of an image's config blob vmgate uses: its platform, how it wants its processes run,
 * and the digests of its layers' uncompressed tars ({@code rootfs.diff_ids}), which every applied
 * layer is checked against.
 */
record ImageConfig(Platform platform, ImageDefaults defaults, List<Digest> diffIds) {
    /** The largest config accepted (real ones are a few KiB; a long history makes some larger). */
    static final int MAX_BYTES = 8 << 20;

    ImageConfig {
        diffIds = List.copyOf(diffIds);
    }

    static ImageConfig parse(byte[] body, String what) throws OciException {
        if (body.length > MAX_BYTES) {
            throw new OciException(what + ": the image config is " + body.length + " bytes, more than the " + MAX_BYTES + " accepted");
        }
        try {
            Map<String, Object> m = JsonFields.parseObject(body);
            Platform p = new Platform(JsonFields.string(m, "os").orElse(""), JsonFields.string(m, "architecture").orElse(""),
                    JsonFields.string(m, "variant").orElse(""));
            Map<String, Object> c = JsonFields.object(m, "config");
            String workdir = JsonFields.string(c, "WorkingDir").orElse("");
            if (!workdir.isEmpty() && !workdir.startsWith("/")) {
                throw new OciException(what + ": the config's WorkingDir '" + Digest.printable(workdir) + "' is not an absolute path");
            }
            String user = JsonFields.string(c, "User").orElse("");
            if (!user.isEmpty() && !user.matches("[A-Za-z0-9_][A-Za-z0-9_.-]*[$]?(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?")) {
                throw new OciException(what + ": the config's User '" + Digest.printable(user) + "' is not a user (NAME, UID, NAME:GROUP or UID:GID)");
            }
            List<String> env = JsonFields.strings(c, "Env");
            for (String kv : env) {
                if (kv.indexOf('\0') >= 0) {
                    throw new OciException(what + ": the config's Env holds a NUL");
                }
            }
            ImageDefaults d = new ImageDefaults(env, Optional.of(workdir), Optional.of(user), JsonFields.strings(c, "Entrypoint"),
                    JsonFields.strings(c, "Cmd"));
            List<Digest> diffIds = new java.util.ArrayList<>();
            for (String s : JsonFields.strings(JsonFields.object(m, "rootfs"), "diff_ids")) {
                diffIds.add(Digest.parse(s));
            }
            return new ImageConfig(p, d, diffIds);
        } catch (Json.JsonException | IllegalArgumentException e) {
            throw new OciException(what + ": malformed image config: " + e.getMessage());
        }
    }
}
