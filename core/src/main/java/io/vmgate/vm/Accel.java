package io.vmgate.vm;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Locale;
import java.util.function.BooleanSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * How QEMU runs guest code. KVM only with real hardware virtualization: some hosts have a
 * {@code /dev/kvm} backed by a nested paravirtual hypervisor (PVM) under which a stock kernel
 * crawls (minutes to boot), so the device alone is not enough — the CPU must advertise vmx/svm.
 */
public enum Accel {
    KVM, TCG;

    private static final Logger log = LoggerFactory.getLogger(Accel.class);

    /** The name QEMU's {@code -accel} option takes. */
    public String qemuName() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** "kvm" or "tcg", any case (for command-line flags). */
    public static Accel parse(String s) {
        return valueOf(s.strip().toUpperCase(Locale.ROOT));
    }

    public static Accel detect() {
        String cpuinfo;
        try {
            cpuinfo = Files.readString(Path.of("/proc/cpuinfo"));
        } catch (IOException e) {
            cpuinfo = "";
        }
        Accel a = detect(cpuinfo, Accel::kvmDeviceUsable);
        log.atDebug().setMessage("accel_detected").addKeyValue("accel", a.qemuName()).log();
        return a;
    }

    static Accel detect(String cpuinfo, BooleanSupplier kvmDeviceUsable) {
        return hasHardwareVirtualization(cpuinfo) && kvmDeviceUsable.getAsBoolean() ? KVM : TCG;
    }

    /** True if the first {@code flags} line lists {@code vmx} (Intel VT-x) or {@code svm} (AMD-V). */
    static boolean hasHardwareVirtualization(String cpuinfo) {
        for (String line : cpuinfo.split("\n")) {
            int colon = line.indexOf(':');
            if (colon > 0 && line.substring(0, colon).strip().equals("flags")) {
                for (String flag : line.substring(colon + 1).strip().split("\\s+")) {
                    if (flag.equals("vmx") || flag.equals("svm")) {
                        return true;
                    }
                }
                return false;
            }
        }
        return false;
    }

    private static boolean kvmDeviceUsable() {
        try (FileChannel ignored = FileChannel.open(Path.of("/dev/kvm"), StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            return true;
        } catch (IOException | UnsupportedOperationException | SecurityException e) {
            return false;
        }
    }
}
