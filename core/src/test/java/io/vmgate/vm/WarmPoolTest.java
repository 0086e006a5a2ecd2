package io.vmgate.vm;

import static org.assertj.core.api.Assertions.assertThat;

import io.vmgate.agent.AgentClient;
import io.vmgate.agent.Frame;
import io.vmgate.agent.Message;
import io.vmgate.agent.Protocol;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** The pool's bookkeeping with fake VMs (real restores are covered by the e2e suite). */
class WarmPoolTest {

    /** A VM whose "agent" answers CONFIGURE and counts them: the pool refreshes VMs at hand-out. */
    static final class FakeVm implements Vm {
        final String id;
        final CompletableFuture<Void> exited = new CompletableFuture<>();
        final AtomicInteger configures = new AtomicInteger();
        private final AgentClient agent;

        FakeVm(String id) {
            this.id = id;
            try {
                java.nio.channels.Pipe toGuest = java.nio.channels.Pipe.open(), toHost = java.nio.channels.Pipe.open();
                agent = AgentClient.connect(new PipeChannel(toHost.source(), toGuest.sink()), id);
                Thread.ofPlatform().daemon().start(() -> {
                    try {
                        Frame f;
                        while ((f = Frame.read(toGuest.source())) != null) {
                            if (f.type() == Protocol.CONFIGURE) {
                                configures.incrementAndGet();
                                toHost.sink().write(new Message.Configured().encode().encode());
                            }
                        }
                    } catch (java.io.IOException ignored) {
                        // the test is over
                    }
                });
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }

        public String id() { return id; }
        public AgentClient agent() { return agent; }
        public CompletableFuture<Void> exited() { return exited; }
        public String diagnostics() { return ""; }
        public List<Phase> phases() { return List.of(); }
        public void close() { exited.complete(null); }
    }

    record PipeChannel(java.nio.channels.Pipe.SourceChannel in, java.nio.channels.Pipe.SinkChannel out)
            implements java.nio.channels.ByteChannel {
        public int read(java.nio.ByteBuffer dst) throws java.io.IOException { return in.read(dst); }
        public int write(java.nio.ByteBuffer src) throws java.io.IOException { return out.write(src); }
        public boolean isOpen() { return in.isOpen(); }
        public void close() throws java.io.IOException { in.close(); out.close(); }
    }

    static class FakeLauncher implements VmLauncher {
        final List<FakeVm> made = new CopyOnWriteArrayList<>();

        public Vm launch(String vmId, java.util.function.Consumer<Vm.Phase> progress) {
            FakeVm vm = new FakeVm(vmId);
            made.add(vm);
            return vm;
        }

        long alive() {
            return made.stream().filter(v -> !v.exited.isDone()).count();
        }
    }

    private static void await(java.util.function.BooleanSupplier cond, String what) throws InterruptedException {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (!cond.getAsBoolean()) {
            assertThat(System.nanoTime()).as(what).isLessThan(deadline);
            Thread.sleep(10);
        }
    }

    @Test
    void everyVmIsHandedOutOnceAndReplaced() throws Exception {
        FakeLauncher source = new FakeLauncher();
        try (WarmPool pool = new WarmPool(source, 2, 100, 64)) {
            await(() -> pool.idle() == 2, "pool to fill");
            Set<String> seen = new HashSet<>();
            List<Vm> handed = new ArrayList<>();
            for (int i = 0; i < 20; i++) {
                Vm vm = pool.launch("session-" + i);
                assertThat(seen.add(vm.id())).as("VM %s handed out twice", vm.id()).isTrue();
                handed.add(vm);
                await(() -> pool.idle() == 2, "pool to refill");
            }
            assertThat(handed).extracting(Vm::id).allMatch(id -> id.startsWith("pool-"));
            assertThat(handed).as("each VM gets a fresh clock and entropy when handed out")
                    .allMatch(vm -> ((FakeVm) vm).configures.get() == 1);
            handed.forEach(Vm::close);
        }
        assertThat(source.alive()).as("VMs left running after close").isZero();
    }

    @Test
    void idleAndHandedOutNeverExceedMaxVms() throws Exception {
        FakeLauncher source = new FakeLauncher();
        try (WarmPool pool = new WarmPool(source, 3, 3, 64)) {
            await(() -> pool.idle() == 3, "pool to fill");
            Vm a = pool.launch("a");
            Vm b = pool.launch("b");
            Thread.sleep(300);
            assertThat(source.alive()).as("idle + handed out").isLessThanOrEqualTo(3);
            a.close();
            b.close();
            await(() -> pool.idle() == 3, "pool to refill once sessions end");
        }
        assertThat(source.alive()).isZero();
    }

    @Test
    void theFillerWaitsWhileAConnectionThatFoundThePoolEmptyStartsItsOwnVm() throws Exception {
        java.util.concurrent.Semaphore poolGate = new java.util.concurrent.Semaphore(2);
        java.util.concurrent.CountDownLatch missGate = new java.util.concurrent.CountDownLatch(1);
        FakeLauncher source = new FakeLauncher() {
            @Override
            public Vm launch(String vmId, java.util.function.Consumer<Vm.Phase> progress) {
                try {
                    if (vmId.startsWith("pool-")) {
                        poolGate.acquire();
                    } else {
                        missGate.await();
                    }
                } catch (InterruptedException e) {
                    throw new IllegalStateException(e);
                }
                return super.launch(vmId, progress);
            }
        };
        java.util.function.LongSupplier poolLaunches = () -> source.made.stream().filter(v -> v.id.startsWith("pool-")).count();
        try (WarmPool pool = new WarmPool(source, 2, 100, 64)) {
            await(() -> pool.idle() == 2, "pool to fill");
            Vm a = pool.launch("a");
            Vm c = pool.launch("c"); // the pool is empty; the filler's next start waits at the gate
            await(poolGate::hasQueuedThreads, "the filler to begin a refill");
            CompletableFuture<Vm> b = CompletableFuture.supplyAsync(() -> {
                try {
                    return pool.launch("b"); // a miss: its own start, held at missGate
                } catch (VmException e) {
                    throw new IllegalStateException(e);
                }
            });
            Thread.sleep(200); // b's launch has counted itself as a miss in flight
            poolGate.release(10);
            await(() -> poolLaunches.getAsLong() == 3, "the refill that had begun before the miss");
            Thread.sleep(300);
            assertThat(poolLaunches.getAsLong()).as("no refill while the miss is starting").isEqualTo(3);
            missGate.countDown();
            Vm bv = b.get(10, java.util.concurrent.TimeUnit.SECONDS);
            assertThat(bv.id()).isEqualTo("b");
            await(() -> pool.idle() == 2, "refill once the miss has its VM");
            List.of(a, c, bv).forEach(Vm::close);
        }
        assertThat(source.alive()).isZero();
    }

    @Test
    void deadIdleVmsAreSkipped() throws Exception {
        FakeLauncher source = new FakeLauncher();
        try (WarmPool pool = new WarmPool(source, 1, 10, 64)) {
            await(() -> pool.idle() == 1, "pool to fill");
            source.made.get(0).exited.complete(null); // the idle VM died
            Vm vm = pool.launch("s");
            assertThat(vm.exited()).isNotDone();
            vm.close();
        }
        assertThat(source.alive()).isZero();
    }
}
