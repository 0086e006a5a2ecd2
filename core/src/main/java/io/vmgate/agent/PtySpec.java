package io.vmgate.agent;

import java.util.List;

/** A terminal for a guest process: TERM, size (0 = the guest's 24x80 default) and RFC 4254 modes. */
public record PtySpec(String term, int rows, int cols, List<Message.TermMode> modes) {

    static final PtySpec NONE = new PtySpec("", 0, 0, List.of());

    public PtySpec {
        term = term == null ? "" : term;
        modes = List.copyOf(modes);
        if (rows < 0 || rows > 0xffff || cols < 0 || cols > 0xffff) {
            throw new IllegalArgumentException("terminal size " + rows + "x" + cols + " out of range");
        }
    }

    public static PtySpec of(String term, int rows, int cols) {
        return new PtySpec(term, rows, cols, List.of());
    }
}
