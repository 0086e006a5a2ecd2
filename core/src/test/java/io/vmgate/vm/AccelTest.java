package io.vmgate.vm;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

public class AccelTest {
    public static final String INTEL_VMX = """
            processor	: 0
            vendor_id	: GenuineIntel
            model name	: Intel(R) Xeon(R) Processor
            cpu MHz		: 2299.998
            flags		: fpu vme de pse tsc msr vmx constant_tsc nonstop_tsc tsc_known_freq
            vmx flags	: vnmi preemption_timer

            processor	: 1
            cpu MHz		: 1200.000
            flags		: fpu vme de pse tsc msr vmx constant_tsc
            """;
    public static final String AMD_SVM = "processor\t: 0\nflags\t\t: fpu svm lm\n";
    /** This project's machines: no vmx/svm (a nested PVM /dev/kvm that crawls). */
    public static final String NO_VIRT = """
            processor	: 0
            cpu MHz		: 2299.998
            flags		: fpu vme de pse tsc msr pae constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq
            """;

    @Test
    void kvmNeedsBothTheCpuFlagAndAUsableDevice() {
        assertThat(Accel.detect(INTEL_VMX, () -> true)).isEqualTo(Accel.KVM);
        assertThat(Accel.detect(AMD_SVM, () -> true)).isEqualTo(Accel.KVM);
        assertThat(Accel.detect(INTEL_VMX, () -> false)).isEqualTo(Accel.TCG);
        assertThat(Accel.detect(NO_VIRT, () -> true)).isEqualTo(Accel.TCG);
        assertThat(Accel.detect("", () -> true)).isEqualTo(Accel.TCG);
    }

    @Test
    void flagsAreMatchedAsWholeWordsOnTheFlagsLine() {
        // "vmx flags" is a key, not a flag; "svm_lock"-style names must not count
        assertThat(Accel.hasHardwareVirtualization("vmx flags\t: vnmi\nflags\t: fpu svm_lock tsc\n")).isFalse();
        assertThat(Accel.hasHardwareVirtualization("flags\t: fpu\tvmx\n")).isTrue();
    }

    @Test
    void parsesOperatorOverrides() {
        assertThat(Accel.parse("kvm")).isEqualTo(Accel.KVM);
        assertThat(Accel.parse(" TCG ")).isEqualTo(Accel.TCG);
        assertThat(Accel.TCG.qemuName()).isEqualTo("tcg");
    }
}
