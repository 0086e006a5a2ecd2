package io.vmgate.vm.qemu;

import static io.vmgate.vm.AccelTest.AMD_SVM;
import static io.vmgate.vm.AccelTest.INTEL_VMX;
import static io.vmgate.vm.AccelTest.NO_VIRT;
import static org.assertj.core.api.Assertions.assertThat;

import java.util.OptionalLong;
import org.junit.jupiter.api.Test;

class HostClockTest {
    @Test
    void hostTscRateComesFromTheFirstProcessor() {
        assertThat(HostClock.tscKhz(INTEL_VMX)).isEqualTo(OptionalLong.of(2_299_998));
        assertThat(HostClock.tscKhz(NO_VIRT)).isEqualTo(OptionalLong.of(2_299_998));
        assertThat(HostClock.tscKhz(AMD_SVM)).isEmpty(); // no cpu MHz
        // bare metal: cpu MHz is the current (scaled) frequency, the model name has the nominal TSC rate
        assertThat(HostClock.tscKhz("model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz\ncpu MHz\t: 800.123\n"
                + "flags\t: fpu tsc constant_tsc\n")).hasValue(1_900_000);
        assertThat(HostClock.tscKhz("model name\t: AMD EPYC 7B13\ncpu MHz\t: 2450.000\nflags\t: fpu tsc\n"))
                .hasValue(2_450_000); // best guess
        assertThat(HostClock.tscKhz("cpu MHz\t: bogus\nflags\t: constant_tsc\n")).isEmpty();
    }
}
