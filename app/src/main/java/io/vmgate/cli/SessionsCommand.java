package io.vmgate.cli;

import io.vmgate.control.ControlClient;
import io.vmgate.text.Json;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code vmgate sessions [kill ID | homes | discard USER]}: the live sessions of a running server, over its control socket. */
@Command(name = "sessions", mixinStandardHelpOptions = true, subcommands = {SessionsCommand.Kill.class, SessionsCommand.Homes.class,
        SessionsCommand.Discard.class},
        description = {
        "List the live sessions of a running vmgate serve (over its control socket): id, user, remote address,",
        "VM, when it started, how long it has been idle, bytes in (from the client) and out (to the client)."})
final class SessionsCommand implements Callable<Integer> {
    /** Exit status when the server answered that it could not do it (no such session). */
    static final int REFUSED = 1;

    @Option(names = "--control-socket", paramLabel = "PATH",
            description = "The server's control socket (default: control.sock in ~/.local/state/vmgate, beside the default host key).")
    Path controlSocket;

    @Option(names = "--json", description = "Print the server's answer as JSON (one object) instead of a table.")
    boolean json;

    Path socket() {
        return controlSocket != null ? controlSocket : ServeCommand.defaultHostKey().resolveSibling("control.sock");
    }

    @Override
    public Integer call() throws IOException {
        Map<String, Object> answer = ControlClient.request(socket(), Map.of("op", "sessions"));
        if (!Boolean.TRUE.equals(answer.get("ok"))) {
            System.err.println("vmgate: " + answer.get("error"));
            return REFUSED;
        }
        if (json) {
            System.out.println(Json.write(answer));
            return 0;
        }
        List<?> sessions = answer.get("sessions") instanceof List<?> l ? l : List.of();
        print(sessions, System.out);
        return 0;
    }

    static void print(List<?> sessions, PrintStream out) {
        List<String[]> rows = new ArrayList<>();
        rows.add(new String[] {"ID", "USER", "REMOTE", "VM", "STARTED", "IDLE", "IN", "OUT"});
        for (Object o : sessions) {
            if (!(o instanceof Map<?, ?> s)) {
                continue;
            }
            rows.add(new String[] {text(s.get("id")), text(s.get("user")), text(s.get("remote")), text(s.get("vm")),
                    text(s.get("started")), idle(s.get("idle_ms")), text(s.get("bytes_in")), text(s.get("bytes_out"))});
        }
        table(rows, out);
    }

    private static void table(List<String[]> rows, PrintStream out) {
        int[] width = new int[rows.getFirst().length];
        for (String[] r : rows) {
            for (int i = 0; i < r.length; i++) {
                width[i] = Math.max(width[i], r[i].length());
            }
        }
        for (String[] r : rows) {
            StringBuilder b = new StringBuilder();
            for (int i = 0; i < r.length; i++) {
                b.append(i == r.length - 1 ? r[i] : String.format("%-" + (width[i] + 2) + "s", r[i]));
            }
            out.println(b.toString().stripTrailing());
        }
    }

    /** A value from the server, made safe for a terminal (a user name is the client's choice). */
    private static String text(Object v) {
        if (v == null) {
            return "-";
        }
        return v.toString().replaceAll("[\\p{Cntrl}\\s]", "?");
    }

    private static String idle(Object ms) {
        if (!(ms instanceof Number n)) {
            return "-";
        }
        long s = n.longValue() / 1000;
        return s < 60 ? s + "s" : io.vmgate.text.Durations.format(Duration.ofSeconds(s));
    }

    /** {@code vmgate sessions homes}: the persistent homes the server keeps ({@code --persist home}). */
    @Command(name = "homes", mixinStandardHelpOptions = true, description = {
            "List the persistent homes of a running vmgate serve: user, the directory under STATE/homes, size,",
            "what it takes on the host (sparse), when it was last written, and whether a VM has it now."})
    static final class Homes implements Callable<Integer> {
        @picocli.CommandLine.ParentCommand
        SessionsCommand parent;

        @Override
        public Integer call() throws IOException {
            Map<String, Object> answer = ControlClient.request(parent.socket(), Map.of("op", "homes"));
            if (!Boolean.TRUE.equals(answer.get("ok"))) {
                System.err.println("vmgate: " + answer.get("error"));
                return REFUSED;
            }
            if (parent.json) {
                System.out.println(Json.write(answer));
                return 0;
            }
            printHomes(answer.get("homes") instanceof List<?> l ? l : List.of(), System.out);
            return 0;
        }
    }

    static void printHomes(List<?> homes, PrintStream out) {
        List<String[]> rows = new ArrayList<>();
        rows.add(new String[] {"USER", "DIR", "SIZE", "USED", "MODIFIED", "IN USE", "SAVED", "SAVED AGO"});
        for (Object o : homes) {
            if (o instanceof Map<?, ?> h) {
                rows.add(new String[] {text(h.get("user")), text(h.get("dir")), mib(h.get("size_bytes")), mib(h.get("used_bytes")),
                        text(h.get("modified")), Boolean.TRUE.equals(h.get("in_use")) ? "yes" : "no", mib(h.get("saved_bytes")),
                        ago(h.get("saved_at"))});
            }
        }
        table(rows, out);
    }

    /** How long ago an ISO-8601 instant was, "-" without one. */
    private static String ago(Object instant) {
        try {
            return instant instanceof String s ? idle(Duration.between(java.time.Instant.parse(s), java.time.Instant.now()).toMillis()) : "-";
        } catch (java.time.format.DateTimeParseException e) {
            return "?";
        }
    }

    private static String mib(Object bytes) {
        return bytes instanceof Number n && n.longValue() >= 0 ? (n.longValue() + (1 << 19)) / (1 << 20) + "M" : "-";
    }

    /** {@code vmgate sessions discard USER}: removes one user's saved machine ({@code --persist machine}), not their home. */
    @Command(name = "discard", mixinStandardHelpOptions = true, description = {
            "Discard a user's saved machine (--persist machine): their home stays, their next connection gets a fresh",
            "machine. Refused while the user's machine runs (it is saved when their last connection ends)."})
    static final class Discard implements Callable<Integer> {
        @picocli.CommandLine.ParentCommand
        SessionsCommand parent;

        @Parameters(paramLabel = "USER", description = "The user name (the USER column of `vmgate sessions homes`).")
        String user;

        @Override
        public Integer call() throws IOException {
            Map<String, Object> answer = ControlClient.request(parent.socket(), Map.of("op", "discard_machine", "user", user));
            if (!Boolean.TRUE.equals(answer.get("ok"))) {
                System.err.println("vmgate: " + answer.get("error"));
                return REFUSED;
            }
            System.out.println("discarded the saved machine of " + text(user) + " (their home is kept)");
            return 0;
        }
    }

    /** {@code vmgate sessions kill ID}: ends one session, telling its user. */
    @Command(name = "kill", mixinStandardHelpOptions = true, description = {
            "End a live session: its commands end with a message to the user and exit status 255, its VM is destroyed."})
    static final class Kill implements Callable<Integer> {
        @picocli.CommandLine.ParentCommand
        SessionsCommand parent;

        @Parameters(paramLabel = "ID", description = "The session's id (the ID column of `vmgate sessions`).")
        String id;

        @Option(names = "--reason", paramLabel = "TEXT", description = "Told to the user after \"session ended by the operator: \".")
        String reason;

        @Override
        public Integer call() throws IOException {
            Map<String, Object> req = new LinkedHashMap<>();
            req.put("op", "kill");
            req.put("id", id);
            if (reason != null) {
                req.put("reason", reason);
            }
            Map<String, Object> answer = ControlClient.request(parent.socket(), req);
            if (!Boolean.TRUE.equals(answer.get("ok"))) {
                System.err.println("vmgate: " + answer.get("error"));
                return REFUSED;
            }
            System.out.println("ended session " + id);
            return 0;
        }
    }
}
