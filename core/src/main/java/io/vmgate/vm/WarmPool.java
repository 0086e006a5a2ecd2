package io.vmgate.vm;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.LinkedBlockingDeque;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Keeps up to {@code size} VMs started and idle, so a connection costs only the hand-over.
 * A pooled VM serves exactly one caller and is never reused; each hand-out triggers a
 * replacement in the background, but only once no connection that found the pool empty is
 * still starting its own VM (refilling never competes with a waiting user). The pool never lets its idle VMs plus the VMs it has
 * handed out exceed {@code maxVms}, stops refilling (and sheds idle VMs) when the host is
 * short of memory, and {@link #close()} leaves nothing running.
 */
public final class WarmPool implements VmLauncher, AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(WarmPool.class);
    private static final long MIB = 1024 * 1024;

    private final VmLauncher source;
    private final int size;
    private final int maxVms;
    private final long guestMemoryBytes;
    private final LinkedBlockingDeque<Vm> idle = new LinkedBlockingDeque<>();
    private final AtomicInteger handedOut = new AtomicInteger();
    /** Connections that found the pool empty and are starting their own VM right now. */
    private final AtomicInteger missesInFlight = new AtomicInteger();
    private final AtomicLong serial = new AtomicLong();
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final Thread filler;
    private volatile boolean closed;

    public WarmPool(VmLauncher source, int size, int maxVms, int guestMemoryMib) {
        if (size < 1) {
            throw new IllegalArgumentException("pool size must be at least 1");
        }
        this.source = source;
        this.size = size;
        this.maxVms = maxVms;
        this.guestMemoryBytes = guestMemoryMib * MIB;
        this.filler = Thread.ofVirtual().name("warm-pool-filler").start(this::fillLoop);
    }

    @Override
    public Vm launch(String vmId, java.util.function.Consumer<Vm.Phase> progress) throws VmException {
        // Counted before an idle VM leaves the queue: the filler must never see the gap and
        // start one VM too many.
        handedOut.incrementAndGet();
        Vm vm;
        try {
            vm = takeIdle(vmId, progress);
        } catch (VmException | RuntimeException e) {
            handedOut.decrementAndGet();
            signal();
            throw e;
        }
        vm.exited().whenComplete((v, e) -> {
            handedOut.decrementAndGet();
            signal();
        });
        signal();
        return vm;
    }

    private Vm takeIdle(String vmId, java.util.function.Consumer<Vm.Phase> progress) throws VmException {
        Vm vm;
        while ((vm = idle.pollFirst()) != null) {
            if (!vm.exited().isDone()) {
                break;
            }
            log.atWarn().setMessage("pool_vm_dead").addKeyValue("vm", vm.id()).addKeyValue("note", "discarded").log();
            vm.close();
        }
        if (vm == null) {
            log.atInfo().setMessage("pool_miss").addKeyValue("for", vmId).addKeyValue("reason", "empty").log();
            missesInFlight.incrementAndGet();
            try {
                return source.launch(vmId, progress);
            } finally {
                missesInFlight.decrementAndGet();
                signal();
            }
        }
        log.atInfo().setMessage("pool_hit").addKeyValue("vm", vm.id()).addKeyValue("for", vmId)
                .addKeyValue("idle_left", idle.size()).log();
        refresh(vm);
        return vm;
    }

    /**
     * A VM may have idled for minutes: its clock is stale and its entropy was given at restore.
     * Hand it over with both fresh, as if it had just been restored.
     */
    private void refresh(Vm vm) throws VmException {
        try {
            vm.agent().configureFresh(Vm.HOSTNAME, java.time.Duration.ofSeconds(10));
        } catch (java.io.IOException | java.util.concurrent.TimeoutException e) {
            vm.close();
            throw new VmException("a pooled VM did not answer when handed out: " + e.getMessage(), e);
        }
    }

    /** VMs idle in the pool right now. */
    public int idle() {
        return idle.size();
    }

    private void signal() {
        lock.lock();
        try {
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    private void fillLoop() {
        int failures = 0;
        while (!closed) {
            try {
                if (needsOne()) {
                    Vm vm = source.launch("pool-" + serial.incrementAndGet());
                    if (closed) {
                        vm.close();
                        return;
                    }
                    idle.addLast(vm);
                    failures = 0;
                    log.atInfo().setMessage("pool_ready").addKeyValue("vm", vm.id()).addKeyValue("idle", idle.size()).log();
                    continue;
                }
                shedIfShortOfMemory();
            } catch (VmException e) {
                failures++;
                log.atWarn().setMessage("pool_fill_failed").addKeyValue("attempt", failures)
                        .addKeyValue("reason", e.getMessage().lines().findFirst().orElse("")).log();
            }
            lock.lock();
            try {
                // Back off after failures; otherwise wake on a hand-out, an exit, or a periodic memory check.
                changed.await(failures > 0 ? Math.min(30, 1L << Math.min(failures, 5)) : 5, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                return;
            } finally {
                lock.unlock();
            }
        }
    }

    /**
     * Whether the filler should start a VM now. Never while connections that found the pool empty
     * are starting their own: a start is CPU-bound, and a waiting user comes before the pool.
     */
    private boolean needsOne() {
        return missesInFlight.get() == 0 && idle.size() < size && idle.size() + handedOut.get() < maxVms
                && memoryAvailable() > 2 * guestMemoryBytes + 512 * MIB;
    }

    private void shedIfShortOfMemory() {
        if (memoryAvailable() < guestMemoryBytes + 256 * MIB) {
            Vm vm = idle.pollLast();
            if (vm != null) {
                log.atWarn().setMessage("pool_shrunk").addKeyValue("vm", vm.id()).addKeyValue("reason", "low_memory")
                        .addKeyValue("available_mib", memoryAvailable() / MIB).log();
                vm.close();
            }
        }
    }

    /** MemAvailable from /proc/meminfo; unknown counts as plenty. */
    static long memoryAvailable() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/meminfo"))) {
                if (line.startsWith("MemAvailable:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
                }
            }
        } catch (IOException | NumberFormatException e) {
            // fall through
        }
        return Long.MAX_VALUE;
    }

    @Override
    public void close() {
        closed = true;
        filler.interrupt();
        try {
            filler.join(java.time.Duration.ofSeconds(60));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        Vm vm;
        while ((vm = idle.pollFirst()) != null) {
            vm.close();
        }
        log.atInfo().setMessage("pool_closed").log();
    }
}
