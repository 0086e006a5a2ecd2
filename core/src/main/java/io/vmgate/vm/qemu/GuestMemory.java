package io.vmgate.vm.qemu;

import java.nio.file.Path;

/**
 * Where a VM's guest RAM lives, the one part of the QEMU command line that differs between a
 * cold boot, a template being built, and a VM restored from that template.
 */
public sealed interface GuestMemory {
    /** Anonymous memory ({@code -m}): a cold boot. */
    record Anonymous() implements GuestMemory {}

    /**
     * A template being built: guest RAM is this file, mapped shared, so it holds the guest's memory
     * once QEMU has quit, and the saved state (with {@code x-ignore-shared}) need not carry it.
     */
    record TemplateFile(Path file) implements GuestMemory {}

    /**
     * A VM restored from a template: a private, copy-on-write mapping of the template's memory
     * file, which QEMU opens through its stdin ({@code /proc/self/fd/0}), so the file it maps is
     * the one the host opened even if a newer template replaces it meanwhile. QEMU waits for the
     * saved state ({@code -incoming defer}).
     */
    record Clone() implements GuestMemory {}

    GuestMemory ANONYMOUS = new Anonymous();
    GuestMemory CLONE = new Clone();
}
