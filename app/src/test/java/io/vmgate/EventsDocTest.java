package io.vmgate;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * Log events stay structured and written down (docs/events.md): every event is logged with SLF4J's
 * key-value API (a bare event name, its fields as pairs), never as a formatted line, and the events
 * the sources log are exactly the events the document lists. A source grep over both modules'
 * main sources: ArchUnit cannot see a call's arguments.
 */
class EventsDocTest {
    /** {@code log.info(}, {@code Events.log.warn(}, {@code LOG.debug(} ...: the formatted-line API. */
    private static final Pattern FORMATTED_CALL =
            Pattern.compile("\\b(?:log|LOG|logger|LOGGER)\\s*\\.\\s*(?:trace|debug|info|warn|error)\\s*\\(");
    private static final Pattern SET_MESSAGE = Pattern.compile("\\.setMessage\\(([^()]*(?:\\([^()]*\\)[^()]*)*)\\)");
    private static final Pattern EVENT_NAME = Pattern.compile("\"([a-z][a-z0-9_]*)\"");
    /** The one event name that is not a literal at its call: an ending's, declared in Ending.Reason. */
    private static final String REASON_EVENT = "why.reason().event";
    private static final Pattern REASON_CONSTANT = Pattern.compile("^\\s*[A-Z_]+\\(\"([a-z][a-z0-9_]*)\"\\)[,;]", Pattern.MULTILINE);
    private static final Pattern DOC_ROW = Pattern.compile("^\\| `([a-z][a-z0-9_]*)` \\|", Pattern.MULTILINE);

    private static final Path ROOT = findRoot();

    private static Path findRoot() {
        Path p = Path.of("").toAbsolutePath();
        while (p != null && !Files.exists(p.resolve("docs/events.md"))) {
            p = p.getParent();
        }
        assertThat(p).as("the repository root (with docs/events.md) above " + Path.of("").toAbsolutePath()).isNotNull();
        return p;
    }

    private static List<Path> sources() throws IOException {
        List<Path> out = new ArrayList<>();
        for (String module : List.of("core", "app")) {
            try (Stream<Path> s = Files.walk(ROOT.resolve(module).resolve("src/main/java/io/vmgate"))) {
                s.filter(f -> f.toString().endsWith(".java")).sorted().forEach(out::add);
            }
        }
        assertThat(out).as("both modules' main sources").hasSizeGreaterThan(100);
        return out;
    }

    /** The source with comments blanked out (line breaks kept), so examples in Javadoc do not count. */
    private static String code(Path f) throws IOException {
        String s = Files.readString(f);
        StringBuilder b = new StringBuilder(s.length());
        int i = 0;
        while (i < s.length()) {
            char c = s.charAt(i);
            if (c == '"') { // a string (or text block) literal: copy it whole
                int end = s.startsWith("\"\"\"", i) ? s.indexOf("\"\"\"", i + 3) + 3 : stringEnd(s, i);
                b.append(s, i, end);
                i = end;
            } else if (c == '\'') {
                int end = s.charAt(i + 1) == '\\' ? s.indexOf('\'', i + 3) + 1 : i + 3;
                b.append(s, i, end);
                i = end;
            } else if (s.startsWith("//", i)) {
                i = s.indexOf('\n', i) < 0 ? s.length() : s.indexOf('\n', i);
            } else if (s.startsWith("/*", i)) {
                int end = s.indexOf("*/", i + 2) + 2;
                s.substring(i, end).chars().filter(ch -> ch == '\n').forEach(ch -> b.append('\n'));
                i = end;
            } else {
                b.append(c);
                i++;
            }
        }
        return b.toString();
    }

    private static int stringEnd(String s, int start) {
        int i = start + 1;
        while (s.charAt(i) != '"') {
            i += s.charAt(i) == '\\' ? 2 : 1;
        }
        return i + 1;
    }

    private static String where(Path f, String code, int at) {
        return ROOT.relativize(f) + ":" + (code.substring(0, at).chars().filter(c -> c == '\n').count() + 1);
    }

    @Test
    void everyEventIsLoggedAsANameWithKeyValuePairsNotAsAFormattedLine() throws IOException {
        List<String> offenders = new ArrayList<>();
        for (Path f : sources()) {
            String code = code(f);
            Matcher m = FORMATTED_CALL.matcher(code);
            while (m.find()) {
                offenders.add(where(f, code, m.start()) + ": " + m.group());
            }
            Matcher msg = SET_MESSAGE.matcher(code);
            while (msg.find()) {
                String arg = msg.group(1).strip();
                if (!EVENT_NAME.matcher(arg).matches() && !arg.equals(REASON_EVENT)) {
                    offenders.add(where(f, code, msg.start()) + ": setMessage(" + arg + ") is not a snake_case event name");
                }
            }
        }
        assertThat(offenders).as("log calls that are not log.atInfo().setMessage(\"event\").addKeyValue(...).log()"
                + " (see docs/events.md)").isEmpty();
    }

    @Test
    void theEventsTheSourcesLogAreExactlyTheEventsDocumented() throws IOException {
        Set<String> logged = new TreeSet<>();
        for (Path f : sources()) {
            String code = code(f);
            Matcher msg = SET_MESSAGE.matcher(code);
            while (msg.find()) {
                Matcher name = EVENT_NAME.matcher(msg.group(1).strip());
                if (name.matches()) {
                    logged.add(name.group(1));
                }
            }
            if (f.endsWith("ssh/Ending.java")) {
                Matcher r = REASON_CONSTANT.matcher(code);
                while (r.find()) {
                    logged.add(r.group(1));
                }
            }
        }
        assertThat(logged).as("events logged").hasSizeGreaterThan(100).contains("session_idle_timeout", "vm_ready");
        Set<String> documented = new TreeSet<>();
        Matcher row = DOC_ROW.matcher(Files.readString(ROOT.resolve("docs/events.md")));
        while (row.find()) {
            assertThat(documented.add(row.group(1))).as("documented once: " + row.group(1)).isTrue();
        }
        Set<String> undocumented = new TreeSet<>(logged);
        undocumented.removeAll(documented);
        Set<String> gone = new TreeSet<>(documented);
        gone.removeAll(logged);
        assertThat(undocumented).as("events logged but missing from docs/events.md's table").isEmpty();
        assertThat(gone).as("events in docs/events.md's table that nothing logs").isEmpty();
    }
}
