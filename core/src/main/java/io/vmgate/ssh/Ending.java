package io.vmgate.ssh;

import io.vmgate.text.Durations;
import java.time.Duration;

/**
 * Why a session is refused or ends: the reason's stable name (for logs and the event that reports
 * it) and the one line the user reads on stderr, together, so they cannot drift apart.
 *
 * @param reason  the kind of ending
 * @param message the line for the user, starting with {@code vmgate: }
 */
record Ending(Reason reason, String message) {

    enum Reason {
        PER_USER_LIMIT("session_refused_per_user_limit"),
        CAPACITY("capacity_refused"),
        IDLE_TIMEOUT("session_idle_timeout"),
        TIME_LIMIT("session_time_limit"),
        SHUTDOWN("server_stopping"),
        KILLED("session_killed"),
        GUEST_LOST("vm_died"),
        START_FAILED("vm_failed"),
        CLOSING("connection_closed");

        /** The log event that reports an ending of this kind. */
        final String event;

        Reason(String event) {
            this.event = event;
        }

        /** The reason as logs write it ({@code idle_timeout}). */
        String tag() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    static Ending perUserLimit(int max) {
        return new Ending(Reason.PER_USER_LIMIT, "vmgate: you already have " + max + (max == 1 ? " session" : " sessions")
                + " open, the most allowed per user; close one and try again");
    }

    static Ending capacity(int max) {
        return new Ending(Reason.CAPACITY, "vmgate: server is at capacity (" + max + " sessions), try again later");
    }

    static Ending idleTimeout(Duration timeout) {
        return new Ending(Reason.IDLE_TIMEOUT, "vmgate: session closed: idle for " + Durations.format(timeout));
    }

    static Ending timeLimit(Duration max) {
        return new Ending(Reason.TIME_LIMIT, "vmgate: session closed: maximum session time " + Durations.format(max) + " reached");
    }

    /** The operator ended the session ({@code vmgate sessions kill}), with their reason if they gave one. */
    static Ending killed(String reason) {
        String r = reason == null ? "" : reason.replaceAll("\\p{Cntrl}", " ").strip();
        if (r.length() > 200) {
            r = r.substring(0, 200) + "...";
        }
        return new Ending(Reason.KILLED, "vmgate: session ended by the operator" + (r.isEmpty() ? "" : ": " + r));
    }

    static Ending shutdown() {
        return new Ending(Reason.SHUTDOWN, "vmgate: the server is shutting down");
    }

    static Ending guestLost(String why) {
        return new Ending(Reason.GUEST_LOST, "vmgate: the VM stopped unexpectedly: " + why);
    }

    static Ending startFailed(String why) {
        return new Ending(Reason.START_FAILED, "vmgate: " + why);
    }

    static Ending closing() {
        return new Ending(Reason.CLOSING, "vmgate: the connection is closing");
    }
}
