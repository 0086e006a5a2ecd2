package io.vmgate.exec;

import java.util.Map;
import java.util.TreeMap;

/**
 * A terminal for a guest process: {@code TERM}, its size in rows and columns (0 means the guest's
 * default, 24 x 80) and terminal modes as RFC 4254 §8 encodes them (opcode to value, e.g.
 * {@code 53 -> 0} turns ECHO off); modes the guest does not know are ignored.
 *
 * @param term  the terminal type for {@code TERM} (empty: {@code xterm})
 * @param rows  lines, 0 for the guest's default
 * @param cols  columns, 0 for the guest's default
 * @param modes RFC 4254 terminal modes, opcode to value
 */
public record Pty(String term, int rows, int cols, Map<Integer, Integer> modes) {

    public Pty {
        term = term == null || term.isEmpty() ? "xterm" : term;
        modes = java.util.Collections.unmodifiableMap(new TreeMap<>(modes));
        if (rows < 0 || rows > 0xffff || cols < 0 || cols > 0xffff) {
            throw new IllegalArgumentException("terminal size " + rows + "x" + cols + " out of range");
        }
    }

    public static Pty of(String term, int rows, int cols) {
        return new Pty(term, rows, cols, Map.of());
    }
}
