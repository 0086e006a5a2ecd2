package io.vmgate.ssh;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** The pre-authentication limits' arithmetic, with a hand-driven clock and dice. */
class StartupGateTest {
    final AtomicLong now = new AtomicLong(1_000_000_000L);
    final AtomicInteger dice = new AtomicInteger(0);

    StartupGate gate(StartupLimits limits) {
        return new StartupGate(limits, now::get, bound -> dice.get());
    }

    static StartupLimits limits(String maxStartups, int perSource, String rate) {
        return StartupLimits.DEFAULT.withMaxStartups(maxStartups).withPerSourceMaxStartups(perSource).withPerSourceRate(rate);
    }

    static StartupGate.Ticket admitted(StartupGate.Decision d) {
        assertThat(d).isInstanceOf(StartupGate.Admitted.class);
        return ((StartupGate.Admitted) d).ticket();
    }

    static StartupGate.Drop dropped(StartupGate.Decision d) {
        assertThat(d).isInstanceOf(StartupGate.Dropped.class);
        return ((StartupGate.Dropped) d).why();
    }

    @Test
    void maxStartupsDropsAsOpenSshDoes() {
        StartupGate g = gate(limits("10:30:100", 0, "0/1s"));
        List<StartupGate.Ticket> held = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            held.add(admitted(g.admit("10.0.0." + i)));
        }
        // 10 open: the chance is rate, 30 %. Dice 29 drops, dice 30 lets in.
        dice.set(29);
        assertThat(dropped(g.admit("10.1.0.1"))).isEqualTo(StartupGate.Drop.MAX_STARTUPS);
        dice.set(30);
        held.add(admitted(g.admit("10.1.0.2")));
        // 11 open: 30 + 70 * 1 / 90 = 30 % (integer arithmetic, as sshd.c).
        for (int i = 11; i < 55; i++) {
            dice.set(99);
            held.add(admitted(g.admit("10.2.0." + i)));
        }
        // 55 open: 30 + 70 * 45 / 90 = 65 %.
        dice.set(64);
        assertThat(dropped(g.admit("10.3.0.1"))).isEqualTo(StartupGate.Drop.MAX_STARTUPS);
        dice.set(65);
        held.add(admitted(g.admit("10.3.0.2")));
        assertThat(g.unauthenticated()).isEqualTo(56);
        held.forEach(StartupGate.Ticket::release);
        held.forEach(StartupGate.Ticket::release); // idempotent
        assertThat(g.unauthenticated()).isZero();
        assertThat(g.dropped()).isEqualTo(2);
        assertThat(g.sources()).as("nothing remembered about idle addresses without a rate").isZero();
    }

    @Test
    void aSingleNumberDropsEverythingBeyondIt() {
        StartupGate g = gate(limits("3", 0, "0/1s"));
        for (int i = 0; i < 3; i++) {
            admitted(g.admit("a" + i));
        }
        dice.set(99);
        assertThat(dropped(g.admit("b"))).isEqualTo(StartupGate.Drop.MAX_STARTUPS);
    }

    @Test
    void oneAddressCannotHoldMoreThanItsShareNorStarveOthers() {
        StartupGate g = gate(limits("10:30:100", 8, "0/1s"));
        List<StartupGate.Ticket> flood = new ArrayList<>();
        for (int i = 0; i < 2000; i++) {
            StartupGate.Decision d = g.admit("127.0.0.2");
            if (d instanceof StartupGate.Admitted a) {
                flood.add(a.ticket());
            } else {
                assertThat(dropped(d)).isEqualTo(StartupGate.Drop.PER_SOURCE_MAX_STARTUPS);
            }
        }
        assertThat(flood).hasSize(8);
        dice.set(0); // the unluckiest dice: still let in, because the flood stays below start
        admitted(g.admit("127.0.0.1"));
        flood.getFirst().release(); // one authenticated or left: room for one more from that address
        admitted(g.admit("127.0.0.2"));
        assertThat(dropped(g.admit("127.0.0.2"))).isEqualTo(StartupGate.Drop.PER_SOURCE_MAX_STARTUPS);
    }

    @Test
    void theRateIsATokenBucketPerAddress() {
        StartupGate g = gate(limits("100", 0, "3/1s"));
        for (int i = 0; i < 3; i++) {
            admitted(g.admit("x")).release();
        }
        assertThat(dropped(g.admit("x"))).as("burst spent").isEqualTo(StartupGate.Drop.PER_SOURCE_RATE);
        admitted(g.admit("y")).release(); // another address has its own bucket
        now.addAndGet(Duration.ofMillis(340).toNanos()); // 3 per second: one token after 333 ms
        admitted(g.admit("x")).release();
        assertThat(dropped(g.admit("x"))).isEqualTo(StartupGate.Drop.PER_SOURCE_RATE);
        now.addAndGet(Duration.ofSeconds(5).toNanos());
        for (int i = 0; i < 3; i++) {
            admitted(g.admit("x")).release();
        }
        now.addAndGet(Duration.ofSeconds(5).toNanos());
        admitted(g.admit("x")).release();
    }

    @Test
    void dropsAreLoggedAtMostOnceASecondPerReasonWithACount() {
        StartupGate g = gate(limits("1", 0, "0/1s"));
        admitted(g.admit("a"));
        List<Long> logged = new ArrayList<>();
        for (int i = 0; i < 500; i++) {
            if (i == 250) {
                now.addAndGet(Duration.ofMillis(1001).toNanos());
            }
            long n = ((StartupGate.Dropped) g.admit("b" + i)).logCount();
            if (n > 0) {
                logged.add(n);
            }
        }
        assertThat(logged).containsExactly(1L, 250L);
        assertThat(g.dropped()).isEqualTo(500);
    }

    @Test
    void addressesRememberedAreBounded() {
        StartupGate g = gate(limits("1000000", 0, "5/1h"));
        for (int i = 0; i < StartupGate.MAX_SOURCES + 1000; i++) {
            admitted(g.admit("2001:db8::" + Integer.toHexString(i))).release();
        }
        assertThat(g.sources()).isLessThanOrEqualTo(StartupGate.MAX_SOURCES);
    }

    @Test
    void badLimitsSayWhatIsExpected() {
        assertThatThrownBy(() -> StartupLimits.DEFAULT.withMaxStartups("10:30")).hasMessageContaining("START:RATE:FULL");
        assertThatThrownBy(() -> StartupLimits.DEFAULT.withMaxStartups("10:130:100")).hasMessageContaining("rate 0-100");
        assertThatThrownBy(() -> StartupLimits.DEFAULT.withMaxStartups("100:30:10")).hasMessageContaining("start <= full");
        assertThatThrownBy(() -> StartupLimits.DEFAULT.withPerSourceRate("10")).hasMessageContaining("N/DURATION");
        assertThatThrownBy(() -> StartupLimits.DEFAULT.withPerSourceRate("10/0")).hasMessageContaining("positive duration");
        assertThatThrownBy(() -> StartupLimits.DEFAULT.withPerSourceMaxStartups(-1)).hasMessageContaining("0 (no limit)");
        assertThat(StartupLimits.DEFAULT.withMaxStartups("7").maxStartups()).isEqualTo("7:100:7");
        assertThat(StartupLimits.DEFAULT.withPerSourceRate("20/10s").perSourcePeriod()).isEqualTo(Duration.ofSeconds(10));
    }
}
