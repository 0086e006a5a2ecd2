package io.vmgate.image.oci;

import io.vmgate.text.Json;
import io.vmgate.text.Json.JsonException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * OCI documents (manifests, indexes, configs, registry answers) as {@link Json} reads them: strict
 * UTF-8 in, and typed reads of a field that say which field is wrong. Registries and archives are
 * not trusted: {@link Json} bounds nesting and number lengths, the caller bounds the size.
 */
final class JsonFields {
    private JsonFields() {}

    /** Parses strict UTF-8 JSON (a manifest, a config, an index). */
    static Object parse(byte[] utf8) throws JsonException {
        try {
            return Json.parse(StandardCharsets.UTF_8.newDecoder().decode(ByteBuffer.wrap(utf8)).toString());
        } catch (CharacterCodingException e) {
            throw new JsonException("not UTF-8");
        }
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> parseObject(byte[] text) throws JsonException {
        if (parse(text) instanceof Map<?, ?> m) {
            return (Map<String, Object>) m;
        }
        throw new JsonException("expected a JSON object");
    }

    /** An object member that must be an object if present; empty map when absent or null. */
    @SuppressWarnings("unchecked")
    static Map<String, Object> object(Map<String, Object> m, String key) throws JsonException {
        Object v = m.get(key);
        if (v == null) {
            return Map.of();
        }
        if (v instanceof Map<?, ?> o) {
            return (Map<String, Object>) o;
        }
        throw new JsonException("\"" + key + "\" is not an object");
    }

    /** A member that must be an array of objects if present; empty when absent or null. */
    @SuppressWarnings("unchecked")
    static List<Map<String, Object>> objects(Map<String, Object> m, String key) throws JsonException {
        Object v = m.get(key);
        if (v == null) {
            return List.of();
        }
        if (!(v instanceof List<?> l)) {
            throw new JsonException("\"" + key + "\" is not an array");
        }
        List<Map<String, Object>> out = new ArrayList<>();
        for (Object o : l) {
            if (!(o instanceof Map<?, ?> om)) {
                throw new JsonException("\"" + key + "\" holds something that is not an object");
            }
            out.add((Map<String, Object>) om);
        }
        return out;
    }

    /** A member that must be an array of strings if present; empty when absent or null. */
    static List<String> strings(Map<String, Object> m, String key) throws JsonException {
        Object v = m.get(key);
        if (v == null) {
            return List.of();
        }
        if (!(v instanceof List<?> l)) {
            throw new JsonException("\"" + key + "\" is not an array");
        }
        List<String> out = new ArrayList<>();
        for (Object o : l) {
            if (!(o instanceof String s)) {
                throw new JsonException("\"" + key + "\" holds something that is not a string");
            }
            out.add(s);
        }
        return out;
    }

    /** A member that must be a string if present; empty when absent or null. */
    static Optional<String> string(Map<String, Object> m, String key) throws JsonException {
        Object v = m.get(key);
        if (v == null) {
            return Optional.empty();
        }
        if (v instanceof String s) {
            return Optional.of(s);
        }
        throw new JsonException("\"" + key + "\" is not a string");
    }

    /** A member that must be a whole number if present. */
    static Optional<Long> number(Map<String, Object> m, String key) throws JsonException {
        Object v = m.get(key);
        if (v == null) {
            return Optional.empty();
        }
        if (v instanceof Long l) {
            return Optional.of(l);
        }
        throw new JsonException("\"" + key + "\" is not a whole number that fits 64 bits");
    }
}
