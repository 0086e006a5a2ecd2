package io.vmgate.vm.qemu;

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
 * is exact on hosts with a known-frequency TSC (every VM without vmx we have seen); an
 * approximate rate only makes the guest clock drift, it still boots.
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

    /**
     * From the first processor: {@code cpu MHz} when the kernel says the TSC rate is known
     * ({@code tsc_known_freq}: it came from CPUID, exact); else the nominal rate in an Intel model
     * name ("@ 2.30GHz", which is the TSC rate on constant-TSC CPUs, while {@code cpu MHz} may be
     * the current, scaled frequency); else {@code cpu MHz} as the best guess. A wrong guess only
     * makes the guest clock drift; no hint at all risks a boot that hangs.
     */
    static OptionalLong tscKhz(String cpuinfo) {
        Double mhz = null, nominalMhz = null;
        boolean known = false;
        for (String line : cpuinfo.split("\n")) {
            if (line.isBlank() && mhz != null) {
                break; // end of the first processor
            }
            int colon = line.indexOf(':');
            if (colon < 0) {
                continue;
            }
            String key = line.substring(0, colon).strip(), value = line.substring(colon + 1).strip();
            switch (key) {
                case "cpu MHz" -> mhz = mhz != null ? mhz : parse(value);
                case "flags" -> known = (" " + value + " ").contains(" tsc_known_freq ");
                case "model name" -> {
                    java.util.regex.Matcher m = java.util.regex.Pattern.compile("@\\s*(\\d+(?:\\.\\d+)?)\\s*GHz").matcher(value);
                    if (m.find()) {
                        nominalMhz = Double.parseDouble(m.group(1)) * 1000;
                    }
                }
                default -> { }
            }
        }
        Double best = known && mhz != null ? mhz : nominalMhz != null ? nominalMhz : mhz;
        if (best == null || best < 100 || best > 100_000) {
            return OptionalLong.empty();
        }
        return OptionalLong.of(Math.round(best * 1000));
    }

    private static Double parse(String v) {
        try {
            return Double.parseDouble(v);
        } catch (NumberFormatException e) {
            return null;
        }
    }
}
