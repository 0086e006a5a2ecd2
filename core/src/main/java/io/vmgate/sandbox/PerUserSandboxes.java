package io.vmgate.sandbox;

import io.vmgate.exec.Command;
import io.vmgate.exec.ExecResult;
import io.vmgate.exec.Execution;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.ReentrantLock;

/**
 * At most one sandbox per user at a time, shared by all of that user's sessions: what a
 * persistent home needs, since its disk must never be attached to two VMs. The first session
 * starts the sandbox; a session that arrives meanwhile waits for that start and shares it; the
 * last one to close it tears it down (after {@link Started#beforeClose}), and a session that
 * arrives during the teardown waits for it to finish before it starts a new one. A sandbox that
 * died is replaced at the next session; the sessions that shared it see it lost.
 */
final class PerUserSandboxes {

    /** Starts a user's sandbox; {@code beforeClose} runs before the last session closes it (flushes its home). */
    @FunctionalInterface
    interface Starter {
        Started start() throws SandboxException;
    }

    /** A started sandbox, what to do before the last session closes it, and what to tell the session that started it (may be empty). */
    record Started(Sandbox sandbox, Runnable beforeClose, String notice) {}

    private static final class Entry {
        final ReentrantLock lock = new ReentrantLock();
        Started current; // null: none running
        int sessions;
        boolean dead;    // removed from the map: callers retry with a new entry
    }

    private final ConcurrentHashMap<String, Entry> entries = new ConcurrentHashMap<>();

    /** A session's view of {@code user}'s sandbox, started by {@code starter} if none runs. */
    Sandbox acquire(String user, Starter starter) throws SandboxException {
        for (;;) {
            Entry e = entries.computeIfAbsent(user, u -> new Entry());
            e.lock.lock();
            try {
                if (e.dead) {
                    continue;
                }
                if (e.current != null && e.current.sandbox().lost().isDone()) {
                    tearDown(e.current); // its sessions already see it lost; the next one gets a new sandbox
                    e.current = null;
                    e.sessions = 0;
                }
                String notice = "";
                if (e.current == null) {
                    try {
                        e.current = starter.start();
                    } catch (SandboxException | RuntimeException ex) {
                        retire(user, e);
                        throw ex;
                    }
                    notice = e.current.notice();
                }
                e.sessions++;
                return new Session(user, e, e.current, notice);
            } finally {
                e.lock.unlock();
            }
        }
    }

    /** Whether {@code user} has a sandbox running now. */
    boolean isRunning(String user) {
        Entry e = entries.get(user);
        return e != null && e.current != null;
    }

    /** Users with a sandbox running now. */
    int running() {
        return (int) entries.values().stream().filter(e -> e.current != null).count();
    }

    private void release(String user, Entry e, Started mine) {
        e.lock.lock();
        try {
            if (e.current != mine) {
                return; // replaced after it died: already torn down
            }
            if (--e.sessions > 0) {
                return;
            }
            tearDown(mine);
            e.current = null;
            retire(user, e);
        } finally {
            e.lock.unlock();
        }
    }

    /** Under the entry's lock, with no sandbox left in it: drop it from the map. */
    private void retire(String user, Entry e) {
        if (e.current == null) {
            e.dead = true;
            entries.remove(user, e);
        }
    }

    private static void tearDown(Started s) {
        try {
            s.beforeClose().run();
        } finally {
            s.sandbox().close();
        }
    }

    /** One session's view: everything goes to the shared sandbox but {@link #close()}, which leaves it to the last. */
    private final class Session implements Sandbox {
        private final String user;
        private final Entry entry;
        private final Started shared;
        private final String notice;
        private final AtomicBoolean closed = new AtomicBoolean();

        Session(String user, Entry entry, Started shared, String notice) {
            this.user = user;
            this.entry = entry;
            this.shared = shared;
            this.notice = notice;
        }

        @Override
        public String notice() {
            return notice;
        }

        private Sandbox s() {
            return shared.sandbox();
        }

        @Override
        public String id() {
            return s().id();
        }

        @Override
        public Execution exec(Command command) throws IOException {
            if (closed.get()) {
                throw new io.vmgate.exec.GuestGoneException("the sandbox is closed", null);
            }
            return s().exec(command);
        }

        @Override
        public ExecResult run(Command command, Duration limit) throws IOException, InterruptedException, TimeoutException {
            return s().run(command, limit);
        }

        @Override
        public void upload(Path local, String guestPath) throws IOException, InterruptedException {
            s().upload(local, guestPath);
        }

        @Override
        public void upload(InputStream data, String guestPath) throws IOException, InterruptedException {
            s().upload(data, guestPath);
        }

        @Override
        public void download(String guestPath, Path local) throws IOException, InterruptedException {
            s().download(guestPath, local);
        }

        @Override
        public void download(String guestPath, OutputStream out) throws IOException, InterruptedException {
            s().download(guestPath, out);
        }

        @Override
        public SshAccess enableSsh() throws IOException {
            return s().enableSsh();
        }

        @Override
        public List<Phase> startup() {
            return s().startup();
        }

        @Override
        public CompletableFuture<String> lost() {
            return s().lost();
        }

        @Override
        public String diagnostics() {
            return s().diagnostics();
        }

        @Override
        public void close() {
            if (closed.compareAndSet(false, true)) {
                release(user, entry, shared);
            }
        }
    }
}
