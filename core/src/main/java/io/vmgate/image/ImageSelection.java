package io.vmgate.image;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import java.util.function.Consumer;

/**
 * What {@code --image NAME|DIR} and {@code --rootfs DIR} select: a root filesystem image (by name,
 * by its store directory, or made from a host tree), or a hand-made boot image directory
 * (kernel + initramfs, the original meaning of {@code --image DIR}). Resolving builds what is
 * missing (a host tree's image) and fails with a message naming the image and the cause.
 *
 * @param boot   a boot image to use instead of the built-in one
 * @param rootfs a root filesystem image to attach
 */
public record ImageSelection(Optional<Image> boot, Optional<RootfsImage> rootfs) {

    /** {@code --image NAME|DIR}: a name in the store, an image directory of the store, or a kernel + initramfs directory. */
    public static ImageSelection image(String spec, RootfsStore store) throws ImageException {
        if (RootfsStore.isValidName(spec) && !Files.isDirectory(Path.of(spec))) {
            return new ImageSelection(Optional.empty(), Optional.of(store.get(spec)));
        }
        Path dir = Path.of(spec);
        if (!Files.isDirectory(dir)) {
            throw new ImageException("'" + FsEntry.printable(spec) + "' is neither an image name nor a directory"
                    + " (`vmgate image ls` lists the names)");
        }
        if (Files.isRegularFile(dir.resolve(RootfsImage.PROPERTIES_FILE))) {
            return new ImageSelection(Optional.empty(), Optional.of(RootfsImage.load(dir)));
        }
        if (Files.isRegularFile(dir.resolve(Image.INITRD_FILE))) {
            return new ImageSelection(Optional.of(Image.load(dir)), Optional.empty());
        }
        throw new ImageException(dir + " is not an image directory (neither " + RootfsImage.PROPERTIES_FILE + " nor " + Image.INITRD_FILE
                + " in it)" + (Files.exists(dir.resolve("bin/sh")) ? "; for a root filesystem tree use --rootfs " + dir : ""));
    }

    /** {@code --rootfs DIR}: the image of a host tree, made on first use and reused while the tree is unchanged. */
    public static ImageSelection rootfs(Path dir, RootfsStore store, Consumer<String> progress) throws ImageException {
        return new ImageSelection(Optional.empty(), Optional.of(store.forDirectory(dir, progress)));
    }
}
