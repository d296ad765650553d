// Federation's CLI commands and its factory for the provider (filled in by src/federation/).
import type { Config } from '../config/config.js';
import type { ProviderOptions } from '../provider.js';

export interface CommandGroup {
  name: string;
  usage: string;
  run(config: Config, sub: string | undefined, rest: string[], out: (s: string) => void): Promise<void>;
}

export const commandGroups: CommandGroup[] = [];
export const federationFactory: ProviderOptions['federation'] = undefined;
