package io.vmgate.exec;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.Random;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;
import org.junit.jupiter.api.Test;

class PumpTest {
    @Test
    void copiesEveryByteAndCountsThem() throws Exception {
        byte[] data = new byte[300_000];
        new Random(1).nextBytes(data);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        AtomicLong seen = new AtomicLong();
        long n = Pump.copy(new ByteArrayInputStream(data), out).onData(seen::addAndGet).start().get(10, TimeUnit.SECONDS);
        assertThat(n).isEqualTo(data.length);
        assertThat(seen.get()).isEqualTo(data.length);
        assertThat(out.toByteArray()).isEqualTo(data);
    }

    @Test
    void closesTheTargetAtEndOnlyWhenAsked() throws Exception {
        AtomicBoolean closed = new AtomicBoolean();
        OutputStream target = new ByteArrayOutputStream() {
            @Override
            public void close() {
                closed.set(true);
            }
        };
        Pump.copy(new ByteArrayInputStream(new byte[3]), target).start().get(10, TimeUnit.SECONDS);
        assertThat(closed).isFalse();
        Pump.copy(new ByteArrayInputStream(new byte[3]), target).closeTargetAtEnd().start().get(10, TimeUnit.SECONDS);
        assertThat(closed).isTrue();
    }

    @Test
    void aFailingTargetStopsTheCopyAndTellsTheProducerOnce() {
        AtomicInteger told = new AtomicInteger();
        OutputStream broken = new OutputStream() {
            @Override
            public void write(int b) throws IOException {
                throw new IOException("reader gone");
            }
        };
        InputStream endless = new InputStream() {
            @Override
            public int read() {
                return 'x';
            }
        };
        assertThatThrownBy(() -> Pump.copy(endless, broken).onTargetFailure(told::incrementAndGet).start().get(10, TimeUnit.SECONDS))
                .isInstanceOf(ExecutionException.class).hasRootCauseMessage("reader gone");
        assertThat(told).hasValue(1);
    }

    @Test
    void aFailingSourceEndsTheCopyWithoutBlamingTheTarget() {
        AtomicInteger told = new AtomicInteger();
        InputStream broken = new InputStream() {
            @Override
            public int read() throws IOException {
                throw new IOException("guest gone");
            }
        };
        assertThatThrownBy(() -> Pump.copy(broken, new ByteArrayOutputStream()).onTargetFailure(told::incrementAndGet)
                .start().get(10, TimeUnit.SECONDS)).hasRootCauseMessage("guest gone");
        assertThat(told).hasValue(0);
    }

    @Test
    void writesHoldTheSharedLock() throws Exception {
        ReentrantLock lock = new ReentrantLock();
        AtomicBoolean heldOnEveryWrite = new AtomicBoolean(true);
        OutputStream target = new OutputStream() {
            @Override
            public void write(int b) {
                heldOnEveryWrite.compareAndSet(true, lock.isHeldByCurrentThread());
            }

            @Override
            public void write(byte[] b, int off, int len) {
                heldOnEveryWrite.compareAndSet(true, lock.isHeldByCurrentThread());
            }
        };
        Pump.copy(new ByteArrayInputStream(new byte[100_000]), target).lock(lock).platformThread().start().get(10, TimeUnit.SECONDS);
        assertThat(heldOnEveryWrite).isTrue();
        assertThat(lock.isLocked()).isFalse();
    }
}
