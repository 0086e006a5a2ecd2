package io.vmgate.ssh;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

class SessionSlotsTest {
    @Test
    void theUsersLimitComesFirstThenTheServers() throws Exception {
        SessionSlots slots = new SessionSlots(3, 2);
        SessionSlots.Slot a1 = slots.acquire("alice");
        slots.acquire("alice");
        assertThatThrownBy(() -> slots.acquire("alice")).isInstanceOf(Refusal.class)
                .satisfies(e -> assertThat(((Refusal) e).ending().reason()).isEqualTo(Ending.Reason.PER_USER_LIMIT))
                .hasMessage("vmgate: you already have 2 sessions open, the most allowed per user; close one and try again");
        slots.acquire("bob");
        assertThatThrownBy(() -> slots.acquire("carol")).isInstanceOf(Refusal.class)
                .satisfies(e -> assertThat(((Refusal) e).ending().reason()).isEqualTo(Ending.Reason.CAPACITY));
        assertThat(slots.live("carol")).as("a refused user holds nothing").isZero();
        assertThat(slots.live()).isEqualTo(3);

        a1.close();
        a1.close(); // twice gives back once
        assertThat(slots.live()).isEqualTo(2);
        assertThat(slots.live("alice")).isEqualTo(1);
        slots.acquire("carol");
    }

    @Test
    void zeroMeansNoPerUserLimit() throws Exception {
        SessionSlots slots = new SessionSlots(5, 0);
        for (int i = 0; i < 5; i++) {
            slots.acquire("alice");
        }
        assertThat(slots.live("alice")).isEqualTo(5);
    }
}
