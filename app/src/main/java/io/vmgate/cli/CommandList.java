package io.vmgate.cli;

import java.util.List;

/**
 * Newline-separated commands (as piped to {@code vmgate run}) turned into one shell
 * script that runs them in order and stops at the first failure with its exit code.
 * Blank lines and {@code #} comments are skipped.
 */
final class CommandList {
    private CommandList() {}

    static String toScript(String input) {
        StringBuilder script = new StringBuilder();
        for (String line : input.split("\r?\n")) {
            String trimmed = line.strip();
            if (trimmed.isEmpty() || trimmed.startsWith("#")) {
                continue;
            }
            // A check on its own line works after any command, even one ending in '&'.
            script.append(line).append('\n')
                    .append("__vmgate_rc=$?; [ \"$__vmgate_rc\" -eq 0 ] || exit \"$__vmgate_rc\"\n");
        }
        return script.toString();
    }

    static List<String> argv(String input) {
        return List.of("/bin/sh", "-c", toScript(input));
    }
}
