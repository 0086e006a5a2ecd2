package io.vmgate.sandbox;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.vmgate.exec.Command;
import io.vmgate.exec.ExecResult;
import io.vmgate.exec.Execution;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** One sandbox per user at a time, shared by the user's sessions, torn down by the last (fake sandboxes). */
class PerUserSandboxesTest {
    final PerUserSandboxes users = new PerUserSandboxes();
    final List<String> events = new CopyOnWriteArrayList<>();
    final AtomicInteger started = new AtomicInteger();

    /** A sandbox that only records its closing. */
    final class Fake implements Sandbox {
        final String id = "vm" + started.incrementAndGet();
        final CompletableFuture<String> lost = new CompletableFuture<>();

        @Override public String id() { return id; }
        @Override public Execution exec(Command command) { throw new UnsupportedOperationException(); }
        @Override public ExecResult run(Command command, Duration limit) { throw new UnsupportedOperationException(); }
        @Override public void upload(Path local, String guestPath) { }
        @Override public void upload(InputStream data, String guestPath) { }
        @Override public void download(String guestPath, Path local) { }
        @Override public void download(String guestPath, OutputStream out) { }
        @Override public SshAccess enableSsh() { throw new UnsupportedOperationException(); }
        @Override public List<Phase> startup() { return List.of(); }
        @Override public CompletableFuture<String> lost() { return lost; }
        @Override public void close() { events.add("close " + id); }
    }

    PerUserSandboxes.Started start() {
        Fake f = new Fake();
        events.add("start " + f.id);
        return new PerUserSandboxes.Started(f, () -> events.add("flush " + f.id), "");
    }

    @Test
    void onlyTheSessionThatStartedTheSandboxIsGivenItsNotice() throws Exception {
        PerUserSandboxes.Starter noticed = () -> {
            Fake f = new Fake();
            return new PerUserSandboxes.Started(f, () -> { }, "vmgate: your saved machine expired");
        };
        Sandbox first = users.acquire("alice", noticed);
        Sandbox second = users.acquire("alice", noticed);
        assertThat(first.notice()).isEqualTo("vmgate: your saved machine expired");
        assertThat(second.notice()).as("it joined a running machine: nothing happened to it").isEmpty();
        first.close();
        second.close();
    }

    @Test
    void aUsersSessionsShareOneSandboxAndTheLastClosesIt() throws Exception {
        Sandbox a1 = users.acquire("alice", this::start);
        Sandbox a2 = users.acquire("alice", this::start);
        Sandbox b = users.acquire("bob", this::start);
        assertThat(a1.id()).isEqualTo(a2.id()).isEqualTo("vm1");
        assertThat(b.id()).isEqualTo("vm2");
        assertThat(users.running()).isEqualTo(2);
        a1.close();
        a1.close(); // a session's close counts once
        assertThat(events).containsExactly("start vm1", "start vm2");
        a2.close();
        assertThat(events).containsExactly("start vm1", "start vm2", "flush vm1", "close vm1");
        assertThat(users.running()).isEqualTo(1);
        Sandbox a3 = users.acquire("alice", this::start);
        assertThat(a3.id()).isEqualTo("vm3");
        assertThatThrownBy(() -> a1.exec(Command.of("true"))).isInstanceOf(java.io.IOException.class);
        a3.close();
        b.close();
        assertThat(users.running()).isZero();
    }

    @Test
    void aFailedStartIsTheCallersAndTheNextSessionTriesAgain() throws Exception {
        assertThatThrownBy(() -> users.acquire("alice", () -> {
            throw new SandboxException("no home for you");
        })).hasMessage("no home for you");
        assertThat(users.running()).isZero();
        Sandbox s = users.acquire("alice", this::start);
        assertThat(s.id()).isEqualTo("vm1");
        s.close();
    }

    @Test
    void aSandboxThatDiedIsReplacedAndItsOldSessionsDoNotCloseTheNewOne() throws Exception {
        Sandbox old = users.acquire("alice", this::start);
        ((Fake) startedSandbox(old)).lost.complete("the VM exited");
        Sandbox fresh = users.acquire("alice", this::start);
        assertThat(fresh.id()).isEqualTo("vm2");
        assertThat(events).containsExactly("start vm1", "flush vm1", "close vm1", "start vm2");
        old.close();
        assertThat(events).doesNotContain("close vm2");
        fresh.close();
        assertThat(events).endsWith("flush vm2", "close vm2");
    }

    @Test
    void sessionsArrivingDuringAStartWaitForItAndShare() throws Exception {
        CountDownLatch inStart = new CountDownLatch(1), release = new CountDownLatch(1);
        var pool = java.util.concurrent.Executors.newFixedThreadPool(3);
        try {
            PerUserSandboxes.Starter slow = () -> {
                inStart.countDown();
                try {
                    release.await(10, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    throw new SandboxException("interrupted", e);
                }
                return start();
            };
            Future<Sandbox> first = pool.submit(() -> users.acquire("alice", slow));
            assertThat(inStart.await(10, TimeUnit.SECONDS)).isTrue();
            Future<Sandbox> second = pool.submit(() -> users.acquire("alice", slow));
            Future<Sandbox> third = pool.submit(() -> users.acquire("alice", slow));
            Thread.sleep(100);
            assertThat(second.isDone()).isFalse();
            release.countDown();
            assertThat(List.of(first.get(10, TimeUnit.SECONDS).id(), second.get(10, TimeUnit.SECONDS).id(),
                    third.get(10, TimeUnit.SECONDS).id())).containsOnly("vm1");
            assertThat(started.get()).isEqualTo(1);
        } finally {
            pool.shutdownNow();
        }
    }

    /** The shared sandbox behind a session, by its id (the fakes are numbered). */
    private Sandbox startedSandbox(Sandbox session) throws Exception {
        var f = session.getClass().getDeclaredField("shared");
        f.setAccessible(true);
        return ((PerUserSandboxes.Started) f.get(session)).sandbox();
    }
}
