package io.vmgate.vm;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.OptionalLong;

/**
 * The host's TSC frequency, which a TCG guest needs on its command line.
 *
 * <p>Under TCG the guest's RDTSC reads the host TSC, but the guest kernel must calibrate its
 * rate against the emulated PIT, and under emulation that calibration fails about two boots in
 * three ("tsc: Unable to calibrate against PIT"), after which the kernel hangs before init.
 * {@code tsc_early_khz=} skips the calibration. The host's rate comes from /proc/cpuinfo, which
 * is exact on hosts with a constant, known-frequency TSC (every VM without vmx we have seen);
 * an approximate rate only makes the guest clock drift, it still boots.
 */
final class HostClock {
    private static volatile OptionalLong cached;

    private HostClock() {}

    static OptionalLong tscKhz() {
        OptionalLong v = cached;
        if (v == null) {
            String cpuinfo;
            try {
                cpuinfo = Files.readString(Path.of("/proc/cpuinfo"));
            } catch (IOException e) {
                cpuinfo = "";
            }
            cached = v = tscKhz(cpuinfo);
        }
        return v;
    }

    /** From the first processor's {@code cpu MHz}, if its flags say the TSC rate is constant. */
    static OptionalLong tscKhz(String cpuinfo) {
        Double mhz = null;
        boolean constant = false;
        for (String line : cpuinfo.split("\n")) {
            if (line.isBlank() && mhz != null) {
                break; // end of the first processor
            }
            int colon = line.indexOf(':');
            if (colon < 0) {
                continue;
            }
            String key = line.substring(0, colon).strip(), value = line.substring(colon + 1).strip();
            if (key.equals("cpu MHz") && mhz == null) {
                try {
                    mhz = Double.parseDouble(value);
                } catch (NumberFormatException e) {
                    return OptionalLong.empty();
                }
            } else if (key.equals("flags")) {
                constant = (" " + value + " ").contains(" constant_tsc ");
            }
        }
        if (mhz == null || !constant || mhz < 100 || mhz > 100_000) {
            return OptionalLong.empty();
        }
        return OptionalLong.of(Math.round(mhz * 1000));
    }
}
