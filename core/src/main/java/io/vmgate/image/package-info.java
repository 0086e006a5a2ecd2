/** Builds, caches and loads VM images (kernel + initramfs), assembled without root from host packages. */
package io.vmgate.image;
