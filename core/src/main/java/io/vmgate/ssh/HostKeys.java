package io.vmgate.ssh;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.util.Iterator;
import org.apache.sshd.common.config.keys.KeyUtils;
import org.apache.sshd.common.config.keys.PublicKeyEntry;
import org.apache.sshd.common.config.keys.writer.openssh.OpenSSHKeyPairResourceWriter;
import org.apache.sshd.common.keyprovider.KeyPairProvider;
import org.apache.sshd.common.util.io.resource.PathResource;
import org.apache.sshd.common.util.security.SecurityUtils;

/**
 * The server's ed25519 host key: generated once (OpenSSH format, mode 0600, with a {@code .pub}
 * beside it) and reused after, so clients never see it change. Unlike MINA's generating key
 * provider this never replaces an existing key it cannot read: it refuses to start instead.
 */
public final class HostKeys {
    private HostKeys() {}

    /** Loads the key at {@code path}, generating it first if the file does not exist. */
    public static KeyPair loadOrGenerate(Path path) throws IOException {
        return loadOrGenerate(path, "vmgate host key");
    }

    /** {@link #loadOrGenerate(Path)}, with this comment in a newly generated key and its {@code .pub} line. */
    public static KeyPair loadOrGenerate(Path path, String comment) throws IOException {
        path = path.toAbsolutePath();
        if (Files.exists(path)) {
            return load(path);
        }
        Path dir = path.getParent();
        if (!Files.isDirectory(dir)) {
            try {
                Files.createDirectories(dir, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
            } catch (UnsupportedOperationException e) {
                Files.createDirectories(dir);
            }
        }
        KeyPair kp;
        byte[] encoded;
        try {
            kp = SecurityUtils.getKeyPairGenerator(SecurityUtils.ED25519).generateKeyPair();
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            new OpenSSHKeyPairResourceWriter().writePrivateKey(kp, comment, null, out);
            encoded = out.toByteArray();
        } catch (GeneralSecurityException e) {
            throw new IOException("cannot generate an ed25519 host key: " + e.getMessage(), e);
        }
        // Written to a private temporary file, then linked into place: a crash never leaves a
        // half-written key, and link(2) fails when a key appeared meanwhile, so of several
        // servers starting at once the first key wins and every server uses that one.
        Path tmp = Files.createTempFile(dir, ".hostkey", ".tmp",
                PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
        try {
            Files.write(tmp, encoded);
            try {
                Files.createLink(path, tmp);
            } catch (FileAlreadyExistsException e) {
                throw e;
            } catch (IOException | UnsupportedOperationException e) {
                Files.move(tmp, path); // no hard links here: best effort, fails if the key exists
            }
        } catch (FileAlreadyExistsException e) {
            return load(path);
        } finally {
            Files.deleteIfExists(tmp);
        }
        Path pub = Path.of(path + ".pub");
        try {
            Files.writeString(pub, PublicKeyEntry.toString(kp.getPublic()) + " " + comment + "\n");
        } catch (IOException e) {
            // The .pub file is a convenience for operators; the private key is what matters.
        }
        return load(path);
    }

    static KeyPair load(Path path) throws IOException {
        if (!Files.isRegularFile(path) || !Files.isReadable(path)) {
            throw new IOException("host key " + path + " is not a readable file");
        }
        Iterable<KeyPair> keys;
        try (InputStream in = Files.newInputStream(path)) {
            keys = SecurityUtils.loadKeyPairIdentities(null, new PathResource(path), in, null);
        } catch (GeneralSecurityException | RuntimeException e) {
            throw new IOException("cannot read host key " + path + ": " + e.getMessage()
                    + " (move it away to have a new one generated)", e);
        }
        Iterator<KeyPair> it = keys == null ? null : keys.iterator();
        if (it == null || !it.hasNext()) {
            throw new IOException("cannot read host key " + path + ": the file holds no key (move it away to have a new one generated)");
        }
        KeyPair kp = it.next();
        String type = KeyUtils.getKeyType(kp);
        if (!KeyPairProvider.SSH_ED25519.equals(type)) {
            throw new IOException("cannot use host key " + path + ": it is " + type + ", not ssh-ed25519 (move it away to have a new one generated)");
        }
        return kp;
    }

    /** The SHA256 fingerprint, as {@code ssh-keygen -l} prints it. */
    public static String fingerprint(KeyPair kp) {
        return KeyUtils.getFingerPrint(kp.getPublic());
    }
}
